//go:build fieldmesh_keepprekeys

package node

// keepPrekeysBuild says whether this is the capture test's control build.
const keepPrekeysBuild = true
