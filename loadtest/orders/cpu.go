package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The CPU of each party of a run, read from /proc: what a shared machine cannot blur as much as
// wall-clock rates. Times are in the kernel's clock ticks (USER_HZ, 100 a second on Linux).
const tick = 10 * time.Millisecond

// cpuMeter samples the CPU time of the server, of PostgreSQL (the postmaster and its backends), of
// Redis, of this generator, and of the whole machine.
type cpuMeter struct {
	server, pg, redis int    // pids; 0 skips
	onStart           func() // called as the buyers start, if set
}

type cpuSample struct {
	server, pg, redis, self time.Duration
	machineBusy, machineAll time.Duration // every core: non-idle, and all
}

func (m cpuMeter) sample() cpuSample {
	var s cpuSample
	if m.server > 0 {
		s.server = procCPU(m.server, false)
	}
	if m.pg > 0 {
		s.pg = procCPU(m.pg, true) + childrenCPU(m.pg)
	}
	if m.redis > 0 {
		s.redis = procCPU(m.redis, false)
	}
	s.self = procCPU(os.Getpid(), false)
	s.machineBusy, s.machineAll = machineCPU()
	return s
}

func (a cpuSample) sub(b cpuSample) cpuSample {
	return cpuSample{a.server - b.server, a.pg - b.pg, a.redis - b.redis, a.self - b.self,
		a.machineBusy - b.machineBusy, a.machineAll - b.machineAll}
}

// statFields are the fields of /proc/<pid>/stat after the command name; nil when it is gone.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// procCPU is pid's user and system time; with children, that of its reaped children too.
func procCPU(pid int, children bool) time.Duration {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	// After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
	n := 2
	if children {
		n = 4
	}
	var t int64
	for _, v := range f[11 : 11+n] {
		x, _ := strconv.ParseInt(v, 10, 64)
		t += x
	}
	return time.Duration(t) * tick
}

// childrenCPU is the user and system time of pid's live children.
func childrenCPU(pid int) time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	parent := strconv.Itoa(pid)
	var t time.Duration
	for _, d := range dirs {
		child, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if f := statFields(child); len(f) > 14 && f[1] == parent {
			t += procCPU(child, false)
		}
	}
	return t
}

// machineCPU is the busy and total time of every core since boot (/proc/stat).
func machineCPU() (busy, all time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		x, _ := strconv.ParseInt(v, 10, 64)
		all += time.Duration(x) * tick
		if i != 3 && i != 4 { // idle, iowait
			busy += time.Duration(x) * tick
		}
	}
	return busy, all
}

// takeProfiles writes a CPU, a block, a mutex and an allocation profile of secs seconds from the pprof
// endpoint base to prefix.{cpu,block,mutex,allocs}.pprof; failures are printed, not fatal.
func takeProfiles(base, prefix string, secs int) {
	var wg sync.WaitGroup
	for kind, path := range map[string]string{"cpu": "profile", "block": "block", "mutex": "mutex", "allocs": "allocs"} {
		wg.Go(func() {
			url := base + path + "?seconds=" + strconv.Itoa(secs)
			resp, err := http.Get(url)
			if err == nil {
				defer resp.Body.Close()
				var f *os.File
				if f, err = os.Create(prefix + "." + kind + ".pprof"); err == nil {
					_, err = io.Copy(f, resp.Body)
					err = errors.Join(err, f.Close())
				}
			}
			if err != nil {
				fmt.Printf("profile %s: %v\n", url, err)
			}
		})
	}
	wg.Wait()
}
