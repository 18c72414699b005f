// A stand-in for Android's android.content.Context, the one Android class gobind's Java runtime
// (go.Seq.setContext) names, so the generated Java compiles with a plain JDK. Test-only: an app
// compiles against the real Android SDK.
package android.content;

public class Context {}
