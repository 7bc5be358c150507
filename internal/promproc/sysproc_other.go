//go:build !linux

package promproc

import "syscall"

// sysProcAttr has nothing to add outside Linux, which alone has Pdeathsig: there a crashed
// test can leave Prometheus running.
func sysProcAttr() *syscall.SysProcAttr { return nil }
