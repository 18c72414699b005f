package fhirtest

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the server killed when the test process dies, however it dies.
func dieWithParent(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
