//go:build !fieldmesh_keepprekeys

package teamkeys

// keepPrekeys is false in every build but the capture
// test's control (build tag fieldmesh_keepprekeys), where a device keeps
// every prekey it made: the control shows that the capture test can fail.
const keepPrekeys = false
