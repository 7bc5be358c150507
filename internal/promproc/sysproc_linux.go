package promproc

import "syscall"

// sysProcAttr makes the kernel kill Prometheus when the thread that started it dies, so that
// a test binary that crashes or is killed leaves no orphan server behind. (Go never ends the
// threads that run ordinary goroutines, so in practice this is the death of the process.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
