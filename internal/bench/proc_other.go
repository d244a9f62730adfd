//go:build !linux

package bench

import (
	"errors"
	"syscall"
	"time"
)

var errNotLinux = errors.New("the bench reads the router's costs from /proc: Linux only")

func procCPU(int) (time.Duration, error)               { return 0, errNotLinux }
func procRSS(int) (int64, error)                       { return 0, errNotLinux }
func selfCPU() (time.Duration, error)                  { return 0, errNotLinux }
func raiseFileLimit() uint64                           { return 0 }
func childAttr() *syscall.SysProcAttr                  { return nil }
func bindNoPort(string, string, syscall.RawConn) error { return nil }
func loadAvg() float64                                 { return -1 }
