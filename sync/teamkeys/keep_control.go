//go:build fieldmesh_keepprekeys

package teamkeys

// The capture test's control build: prekeys are never destroyed, so a
// captured device reopens every box sealed to one. Never ship it.
const keepPrekeys = true
