// Command pacedload sends pre-built HTTP/1.1 requests at a fixed rate over keep-alive
// connections and prints every request's latency, counted from its scheduled send time (so a
// slow server cannot hide queueing), and the client's own lateness. bench/serving.py builds and
// runs it: the same method as its Python client, without an interpreter's scheduling in the tail.
//
//	pacedload -port P -concurrency C -rate R -requests N -max-seconds S [-timer go] < requests
//	pacedload -port P -concurrency C -rate 0 -max-seconds S < requests    # unpaced: unpaced.go
//
// Request j (of all connections together) is due at start + j/R on connection j mod C; a
// connection has one request in flight at a time, so a request due while its connection still
// waits for the previous answer is sent as soon as that answer is read, and its latency still
// counts from when it was due (coordinated omission counted).
//
// The schedule is kept by one pacer goroutine on its own OS thread, sleeping with nanosleep
// (timer slack 1 ns) and writing each request itself. Go's own timers (time.Sleep, -timer go)
// wake through the network poller's epoll_wait, whose timeout is whole milliseconds: a send
// landed 0-1 ms after it was due (p50 ~0.6 ms), and that lateness of the client counted as the
// server's latency.
//
// stdin: requests, each as a 4-byte big-endian length followed by the raw request bytes.
// stdout: one JSON object {"elapsed_s", "latencies_s", "lags_s", "errors"}; lags_s is each
// request's send time minus its due time (the client's lateness plus any wait for its connection).
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

type result struct {
	ElapsedS   float64   `json:"elapsed_s"`
	LatenciesS []float64 `json:"latencies_s"`
	LagsS      []float64 `json:"lags_s"`
	Errors     []int     `json:"errors"`
}

func readRequests(r io.Reader) ([][]byte, error) {
	var out [][]byte
	br := bufio.NewReader(r)
	for {
		var n uint32
		if err := binary.Read(br, binary.BigEndian, &n); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		req := make([]byte, n)
		if _, err := io.ReadFull(br, req); err != nil {
			return nil, err
		}
		out = append(out, req)
	}
}

// readResponse reads one response (status line, headers, Content-Length body); its status code.
func readResponse(br *bufio.Reader) (int, error) {
	status, err := br.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if len(status) < 12 {
		return 0, fmt.Errorf("short status line %q", status)
	}
	code, err := strconv.Atoi(status[9:12])
	if err != nil {
		return 0, err
	}
	length := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if len(line) > 15 && bytes.EqualFold(line[:15], []byte("content-length:")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
		}
	}
	_, err = br.Discard(length)
	return code, err
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pacedload:", err)
	os.Exit(1)
}

// sleepUntil sleeps with nanosleep (a high-resolution kernel timer) until t; the caller's thread is locked.
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(d))
		syscall.Syscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
	}
}

// conn is one keep-alive connection: requests due on it, in order, and whether one is in flight.
type conn struct {
	mu       sync.Mutex
	c        net.Conn
	br       *bufio.Reader
	busy     bool
	due      []time.Time // due times of requests owed: the first is in flight when busy
	reqs     [][]byte    // the requests not yet sent (after the one in flight)
	lat      []float64
	lags     []float64
	errs     []int
	expected int
}

// send writes req, due at due; the caller holds mu.
func (c *conn) send(req []byte, due time.Time) {
	c.busy = true
	if _, err := c.c.Write(req); err != nil {
		fail(err)
	}
	c.lags = append(c.lags, time.Since(due).Seconds())
}

// offer hands a due request to the connection: sent now if it is idle, else queued behind the one in flight.
func (c *conn) offer(req []byte, due time.Time) {
	c.mu.Lock()
	c.due = append(c.due, due)
	if c.busy {
		c.reqs = append(c.reqs, req)
	} else {
		c.send(req, due)
	}
	c.mu.Unlock()
}

// read reads answers until it has all it expects, sending a queued request after each.
func (c *conn) read(done *sync.WaitGroup) {
	defer done.Done()
	for n := 0; n < c.expected; n++ {
		code, err := readResponse(c.br)
		if err != nil {
			fail(err)
		}
		now := time.Now()
		c.mu.Lock()
		c.lat = append(c.lat, now.Sub(c.due[0]).Seconds())
		if code < 200 || code > 299 {
			c.errs = append(c.errs, code)
		}
		c.due = c.due[1:]
		c.busy = false
		if len(c.reqs) > 0 {
			req := c.reqs[0]
			c.reqs = c.reqs[1:]
			c.send(req, c.due[0])
		}
		c.mu.Unlock()
	}
}

func main() {
	port := flag.Int("port", 0, "server port on 127.0.0.1")
	concurrency := flag.Int("concurrency", 16, "connections")
	rate := flag.Float64("rate", 2000, "requests per second, all connections together (0: unpaced, see unpaced.go)")
	total := flag.Int("requests", 20000, "requests to send")
	maxSeconds := flag.Float64("max-seconds", 20, "stop scheduling after this long")
	timer := flag.String("timer", "nanosleep", "how the pacer waits: nanosleep, or go (time.Sleep: ~1 ms granularity)")
	flag.Parse()
	requests, err := readRequests(os.Stdin)
	if err != nil || len(requests) == 0 {
		fmt.Fprintln(os.Stderr, "pacedload: no requests on stdin:", err)
		os.Exit(2)
	}
	if *rate == 0 {
		res, err := runUnpaced(*port, *concurrency, *maxSeconds, requests)
		if err != nil {
			fail(err)
		}
		if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
			os.Exit(1)
		}
		return
	}
	step := time.Duration(float64(time.Second) / *rate)
	count := *total / *concurrency * *concurrency
	if limit := int(*maxSeconds * *rate); limit < count {
		count = limit / *concurrency * *concurrency
	}
	conns := make([]*conn, *concurrency)
	var readers sync.WaitGroup
	for i := range conns {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
		if err != nil {
			fail(err)
		}
		defer c.Close()
		conns[i] = &conn{c: c, br: bufio.NewReaderSize(c, 64*1024), expected: count / *concurrency}
		readers.Add(1)
		go conns[i].read(&readers)
	}
	began := time.Now()
	start := began.Add(50 * time.Millisecond)
	runtime.LockOSThread() // the pacer's thread: its own timer slack, no Go timers
	if *timer == "nanosleep" {
		const prSetTimerslack = 29
		syscall.Syscall(syscall.SYS_PRCTL, prSetTimerslack, 1, 0)
	}
	for j := 0; j < count; j++ {
		due := start.Add(time.Duration(j) * step)
		if *timer == "go" {
			time.Sleep(time.Until(due))
		} else {
			sleepUntil(due)
		}
		conns[j%*concurrency].offer(requests[j%len(requests)], due)
	}
	readers.Wait()
	res := result{ElapsedS: time.Since(began).Seconds()}
	for _, c := range conns {
		res.LatenciesS = append(res.LatenciesS, c.lat...)
		res.LagsS = append(res.LagsS, c.lags...)
		res.Errors = append(res.Errors, c.errs...)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		os.Exit(1)
	}
}
