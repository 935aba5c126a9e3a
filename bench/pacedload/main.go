// Command pacedload sends pre-built HTTP/1.1 requests at a fixed rate over keep-alive
// connections and prints every request's latency, counted from its scheduled send time (so a
// slow server cannot hide queueing), and the client's own lateness. bench/serving.py builds and
// runs it: the same method as its Python client, without an interpreter's scheduling in the tail.
//
//	pacedload -port P -concurrency C -rate R -requests N -max-seconds S < requests
//
// stdin: requests, each as a 4-byte big-endian length followed by the raw request bytes.
// stdout: one JSON object {"elapsed_s", "latencies_s", "lags_s", "errors"}.
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
	"strconv"
	"sync"
	"time"
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

func main() {
	port := flag.Int("port", 0, "server port on 127.0.0.1")
	concurrency := flag.Int("concurrency", 16, "connections")
	rate := flag.Float64("rate", 2000, "requests per second, all connections together")
	total := flag.Int("requests", 20000, "requests to send")
	maxSeconds := flag.Float64("max-seconds", 20, "stop scheduling after this long")
	flag.Parse()
	requests, err := readRequests(os.Stdin)
	if err != nil || len(requests) == 0 {
		fmt.Fprintln(os.Stderr, "pacedload: no requests on stdin:", err)
		os.Exit(2)
	}
	interval := time.Duration(float64(*concurrency) / *rate * float64(time.Second))
	perConn := *total / *concurrency
	start := time.Now().Add(50 * time.Millisecond)
	deadline := start.Add(time.Duration(*maxSeconds * float64(time.Second)))
	var mu sync.Mutex
	res := result{}
	var wg sync.WaitGroup
	for c := 0; c < *concurrency; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
			if err != nil {
				fmt.Fprintln(os.Stderr, "pacedload:", err)
				os.Exit(1)
			}
			defer conn.Close()
			br := bufio.NewReaderSize(conn, 64*1024)
			first := start.Add(time.Duration(c) * interval / time.Duration(*concurrency))
			lat, lags, errs := make([]float64, 0, perConn), make([]float64, 0, perConn), []int{}
			for i := 0; i < perConn; i++ {
				scheduled := first.Add(time.Duration(i) * interval)
				if scheduled.After(deadline) {
					break
				}
				time.Sleep(time.Until(scheduled))
				req := requests[(c+i*(*concurrency))%len(requests)]
				if _, err := conn.Write(req); err != nil {
					fmt.Fprintln(os.Stderr, "pacedload:", err)
					os.Exit(1)
				}
				lags = append(lags, time.Since(scheduled).Seconds())
				code, err := readResponse(br)
				if err != nil {
					fmt.Fprintln(os.Stderr, "pacedload:", err)
					os.Exit(1)
				}
				lat = append(lat, time.Since(scheduled).Seconds())
				if code < 200 || code > 299 {
					errs = append(errs, code)
				}
			}
			mu.Lock()
			res.LatenciesS = append(res.LatenciesS, lat...)
			res.LagsS = append(res.LagsS, lags...)
			res.Errors = append(res.Errors, errs...)
			mu.Unlock()
		}(c)
	}
	began := time.Now()
	wg.Wait()
	res.ElapsedS = time.Since(began).Seconds()
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		os.Exit(1)
	}
}
