// Unpaced load (-rate 0): every connection sends its next request the moment the previous
// answer is read in full, for -max-seconds, then waits for the answers in flight.
//
// It is the load generator of bench/serving.py's unpaced runs, whose figure is throughput on a
// 2-core machine where the load client takes its CPU from the same cores as the server: every
// microsecond the client spends per request is one the server's workers do not get. So it is
// written to spend as little as a client can while doing the same work as wrk did:
//
//   - one OS thread, one epoll set (level-triggered), raw non-blocking sockets: per request one
//     write and one read (plus a share of an epoll_wait), no goroutine per connection, no Go
//     netpoller, no per-request allocation;
//   - a request is written as soon as the previous answer is complete (wrk arms and disarms a
//     write event around every request: two epoll_ctl calls and an extra epoll_wait round);
//   - requests are the pre-built bytes from stdin, taken in turn on each connection as in the
//     paced mode (connection c sends requests c, c+C, c+2C, ... of the list);
//   - every answer is read in full (status line, headers, Content-Length body), its status is
//     checked (non-2xx counted in "errors"), and its latency is the time from its request's write
//     to its last byte. A connection the server closes, a read or write error, or an answer
//     without Content-Length stops the run with an error (nothing is silently retried).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// rawConn is one keep-alive connection of the unpaced mode.
type rawConn struct {
	fd      int
	reqs    [][]byte // this connection's requests, in turn
	next    int
	sentAt  time.Time
	buf     []byte
	have    int
	need    int // bytes of the whole answer once its head is parsed, else 0
	status  int
	running bool
}

var headEnd = []byte("\r\n\r\n")

func dialRaw(port int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	addr := &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	if err := syscall.Connect(fd, addr); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		return -1, err
	}
	return fd, syscall.SetNonblock(fd, true)
}

// send writes the connection's next request in full (a request is a few hundred bytes: the
// socket buffer takes it at once; a short write would be retried).
func (c *rawConn) send() error {
	req := c.reqs[c.next%len(c.reqs)]
	c.next++
	c.sentAt = time.Now()
	for len(req) > 0 {
		n, errno := rawIO(syscall.SYS_WRITE, c.fd, req)
		if errno == syscall.EAGAIN || errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		req = req[n:]
	}
	return nil
}

// rawIO is read(2) or write(2) of buf on fd as a raw system call. Through syscall.Read/Write (and
// EpollWait) the runtime is told of each call and, when one takes a while, hands the thread's P to
// another thread and wakes it with a futex: ~1.5 futex calls and 2 of sysmon's nanosleeps per
// request (strace), CPU taken from the server. The loop has nothing else to run meanwhile.
func rawIO(call uintptr, fd int, buf []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(call, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	return int(n), errno
}

// parseHead finds the end of the answer's head in buf: the whole answer's length and its status.
func parseHead(buf []byte) (need int, status int, err error) {
	end := bytes.Index(buf, headEnd)
	if end < 0 {
		return 0, 0, nil
	}
	if end < 12 || !bytes.HasPrefix(buf, []byte("HTTP/1.")) {
		return 0, 0, fmt.Errorf("not an HTTP/1.x answer: %q", buf[:min(end, 40)])
	}
	if status, err = strconv.Atoi(string(buf[9:12])); err != nil {
		return 0, 0, err
	}
	length := -1
	for _, line := range bytes.Split(buf[:end], []byte("\r\n"))[1:] {
		if len(line) > 15 && bytes.EqualFold(line[:15], []byte("content-length:")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(line[15:]))); err != nil {
				return 0, 0, err
			}
		}
	}
	if length < 0 {
		return 0, 0, errors.New("answer without Content-Length")
	}
	return end + len(headEnd) + length, status, nil
}

// readable reads what the socket has; true when an answer is complete (then the buffer is reset).
func (c *rawConn) readable() (bool, error) {
	if c.have == len(c.buf) {
		c.buf = append(c.buf, make([]byte, len(c.buf))...)
	}
	n, errno := rawIO(syscall.SYS_READ, c.fd, c.buf[c.have:])
	if errno == syscall.EAGAIN || errno == syscall.EINTR {
		return false, nil
	}
	if errno != 0 {
		return false, errno
	}
	var err error
	if n == 0 {
		return false, errors.New("the server closed a connection")
	}
	c.have += n
	if c.need == 0 {
		if c.need, c.status, err = parseHead(c.buf[:c.have]); err != nil || c.need == 0 {
			return false, err
		}
	}
	if c.have < c.need {
		return false, nil
	}
	if c.have > c.need {
		return false, errors.New("bytes after the answer (none was asked for)")
	}
	c.have, c.need = 0, 0
	return true, nil
}

// runUnpaced runs the unpaced load on concurrency connections for seconds; the run's result.
func runUnpaced(port, concurrency int, seconds float64, requests [][]byte) (result, error) {
	runtime.GOMAXPROCS(1)
	runtime.LockOSThread()
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return result{}, err
	}
	defer syscall.Close(epfd)
	conns := make([]*rawConn, concurrency)
	byFd := map[int]*rawConn{}
	for i := range conns {
		fd, err := dialRaw(port)
		if err != nil {
			return result{}, err
		}
		defer syscall.Close(fd)
		var mine [][]byte
		for j := i; j < len(requests); j += concurrency {
			mine = append(mine, requests[j])
		}
		if len(mine) == 0 {
			mine = requests
		}
		conns[i] = &rawConn{fd: fd, reqs: mine, buf: make([]byte, 16*1024), running: true}
		byFd[fd] = conns[i]
		event := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &event); err != nil {
			return result{}, err
		}
	}
	res := result{LatenciesS: make([]float64, 0, 1<<20), LagsS: []float64{}, Errors: []int{}}
	began := time.Now()
	deadline := began.Add(time.Duration(seconds * float64(time.Second)))
	for _, c := range conns {
		if err := c.send(); err != nil {
			return result{}, err
		}
	}
	events := make([]syscall.EpollEvent, concurrency)
	running, last := concurrency, began
	for running > 0 {
		r, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(epfd),
			uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), ^uintptr(0), 0, 0)
		if errno == syscall.EINTR {
			continue // the runtime's preemption signal
		}
		if errno != 0 {
			return result{}, errno
		}
		n := int(r)
		for _, event := range events[:n] {
			c := byFd[int(event.Fd)]
			done, err := c.readable()
			if err != nil {
				return result{}, err
			}
			if !done {
				continue
			}
			last = time.Now()
			res.LatenciesS = append(res.LatenciesS, last.Sub(c.sentAt).Seconds())
			if c.status < 200 || c.status > 299 {
				res.Errors = append(res.Errors, c.status)
			}
			if last.Before(deadline) {
				if err := c.send(); err != nil {
					return result{}, err
				}
			} else if c.running {
				c.running = false
				running--
				syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
			}
		}
	}
	res.ElapsedS = last.Sub(began).Seconds()
	return res, nil
}
