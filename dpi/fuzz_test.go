package dpi_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gmb "github.com/goburrow/modbus"
	smb "github.com/simonvetter/modbus"

	"github.com/edgedrun/edged/dpi"
	"github.com/edgedrun/edged/internal/testmodbus"
)

var updateCaptures = flag.Bool("update-captures", false, "rewrite testdata/captures and testdata/fuzz/FuzzParse from live traffic")

// FuzzParse feeds any bytes to ADULen, Parse and a Splitter. None may panic or read past
// the slice (its capacity is cut to its length, so even a reslice past the end panics),
// and whatever Parse calls clean must hold together: the header re-encodes to the bytes,
// ranges stay within the spec.
func FuzzParse(f *testing.F) {
	for _, adu := range captureFiles(f) {
		f.Add(adu)
	}
	for _, c := range parseCases() {
		f.Add(c.adu)
	}
	f.Add(bytes.Join(streamFrames(), nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		data = data[:len(data):len(data)]
		checkADULen(t, data)
		for _, dir := range []dpi.Direction{dpi.Request, dpi.Response} {
			checkParse(t, data, dir)
		}
		checkSplitter(t, data)
		// The same bytes as the PDU of a well-framed ADU: random bytes seldom carry a
		// consistent MBAP header, and the PDU parsers are where the cases are.
		if len(data) >= 1 && len(data) <= dpi.MaxADU-dpi.MBAPLen {
			adu := mbap(data...)
			adu = adu[:len(adu):len(adu)]
			for _, dir := range []dpi.Direction{dpi.Request, dpi.Response} {
				checkParse(t, adu, dir)
			}
		}
	})
}

func checkADULen(t *testing.T, data []byte) {
	n, err := dpi.ADULen(data)
	switch {
	case err != nil:
		var fe *dpi.FrameError
		if !errors.As(err, &fe) || fe.Class != dpi.InvalidLength || n != 0 {
			t.Fatalf("ADULen error %v with n %d", err, n)
		}
	case len(data) < dpi.MBAPLen:
		if n != 0 {
			t.Fatalf("ADULen of %d bytes = %d", len(data), n)
		}
	case n < dpi.MBAPLen+1 || n > dpi.MaxADU:
		t.Fatalf("ADULen = %d, outside 8..%d", n, dpi.MaxADU)
	}
}

var parserClasses = map[dpi.Class]bool{"": true, dpi.InvalidProtocolID: true, dpi.InvalidLength: true,
	dpi.MalformedPDU: true, dpi.UnknownFunctionCode: true, dpi.QuantityOutOfRange: true}

// requestLimits and responseLimits bound a clean frame's Quantity per function, as the
// spec does (responses to bit reads carry whole bytes of bits).
var (
	requestLimits = map[uint8][2]uint16{1: {1, 2000}, 2: {1, 2000}, 3: {1, 125}, 4: {1, 125}, 5: {1, 1}, 6: {1, 1},
		15: {1, 1968}, 16: {1, 123}, 22: {1, 1}, 23: {1, 125}, 24: {1, 1}}
	responseLimits = map[uint8][2]uint16{1: {8, 2000}, 2: {8, 2000}, 3: {1, 125}, 4: {1, 125}, 5: {1, 1}, 6: {1, 1},
		15: {1, 1968}, 16: {1, 123}, 22: {1, 1}, 23: {1, 125}, 24: {0, 31}}
)

func checkParse(t *testing.T, data []byte, dir dpi.Direction) {
	f, c, reason := dpi.ParseReason(data, dir)
	if !parserClasses[c] {
		t.Fatalf("Parse returned class %q, which needs context", c)
	}
	if (c == "") != (reason == "") {
		t.Fatalf("class %q with reason %q", c, reason)
	}
	if len(f.ADU) != len(data) || (len(data) > 0 && &f.ADU[0] != &data[0]) {
		t.Fatal("ADU does not alias the input")
	}
	if c != "" {
		return
	}
	// A clean frame re-encodes: header from the fields, whole size from the length.
	if n, err := dpi.ADULen(data); err != nil || n != len(data) || len(data) != 6+int(f.Length) {
		t.Fatalf("clean frame of %d bytes: ADULen %d, %v, length field %d", len(data), n, err, f.Length)
	}
	hdr := []byte{byte(f.TxID >> 8), byte(f.TxID), byte(f.ProtocolID >> 8), byte(f.ProtocolID),
		byte(f.Length >> 8), byte(f.Length), f.Unit, f.Function}
	if !bytes.Equal(hdr, data[:8]) || f.ProtocolID != 0 || f.Dir != dir {
		t.Fatalf("clean frame's fields %+v do not re-encode % x", f, data[:8])
	}
	fc := f.Function
	if f.Exception {
		if dir != dpi.Response || fc&0x80 == 0 || len(data) != 9 || f.ExceptionCode != data[8] {
			t.Fatalf("clean exception %+v", f)
		}
		fc &^= 0x80
	} else if fc&0x80 != 0 {
		t.Fatalf("exception bit without Exception: %+v", f)
	}
	if want := fc == 5 || fc == 6 || fc == 15 || fc == 16 || fc == 21 || fc == 22 || fc == 23; f.Write != want {
		t.Fatalf("fc %d: Write %v", fc, f.Write)
	}
	if int(f.Address)+int(f.Quantity) > 0x10000 || int(f.WriteAddress)+int(f.WriteQuantity) > 0x10000 {
		t.Fatalf("clean frame's range runs past 65535: %+v", f)
	}
	if f.Table == dpi.TableNone && (f.Address != 0 || f.Quantity != 0) {
		t.Fatalf("range without a table: %+v", f)
	}
	if (f.WriteAddress != 0 || f.WriteQuantity != 0) && (fc != 23 || dir != dpi.Request) {
		t.Fatalf("write range outside an fc 23 request: %+v", f)
	}
	if f.Exception {
		return
	}
	limits := requestLimits
	if dir == dpi.Response {
		limits = responseLimits
	}
	if l, ok := limits[fc]; ok && (f.Quantity < l[0] || f.Quantity > l[1]) {
		t.Fatalf("fc %d %v: clean quantity %d outside %d..%d", fc, dir, f.Quantity, l[0], l[1])
	}
	if fc == 23 && dir == dpi.Request && (f.WriteQuantity < 1 || f.WriteQuantity > 121) {
		t.Fatalf("fc 23 clean write quantity %d", f.WriteQuantity)
	}
	if again, c2 := dpi.Parse(data, dir); c2 != c || !sameFrame(again, f) {
		t.Fatal("Parse is not deterministic")
	}
}

// checkSplitter feeds data in chunks whose sizes the data chooses and checks the
// Splitter returns exactly the frames ADULen finds, in order, and stops at a framing
// error.
func checkSplitter(t *testing.T, data []byte) {
	var want [][]byte
	var wantErr bool
	for rest := data; ; {
		n, err := dpi.ADULen(rest)
		if err != nil {
			wantErr = true
			break
		}
		if n == 0 || n > len(rest) {
			break
		}
		want = append(want, rest[:n])
		rest = rest[n:]
	}
	var s dpi.Splitter
	var got [][]byte
	var gotErr bool
	step := 1
	if len(data) > 0 {
		step = 1 + int(data[len(data)-1])%97
	}
	for rest := data; len(rest) > 0 && !gotErr; {
		n := s.Feed(rest[:min(step, len(rest))])
		rest = rest[n:]
		for {
			adu, ok, err := s.Next()
			if err != nil {
				gotErr = true
				break
			}
			if !ok {
				break
			}
			got = append(got, append([]byte(nil), adu...))
		}
		if !gotErr && n == 0 {
			t.Fatal("drained splitter took nothing")
		}
	}
	if len(data) == 0 {
		return
	}
	if gotErr != wantErr || len(got) != len(want) {
		t.Fatalf("splitter: %d frames, error %v; ADULen: %d frames, error %v", len(got), gotErr, len(want), wantErr)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("splitter frame %d = % x, want % x", i, got[i], want[i])
		}
	}
}

// TestCaptureSeeds drives real clients (goburrow, Debian's mbpoll, and raw frames for the
// functions neither client sends) through a recording relay to two independent real
// servers (simonvetter in process, the libmodbus C server), and checks every ADU seen in
// either direction parses clean. With -update-captures it rewrites testdata/captures
// (one hex file per ADU, the seeds of FuzzParse) and testdata/fuzz/FuzzParse (crafted
// broken frames).
func TestCaptureSeeds(t *testing.T) {
	mbpoll, err := exec.LookPath("mbpoll")
	if err != nil {
		t.Fatalf("mbpoll not found (run make test-setup): %v", err)
	}
	servers := []struct {
		name, addr string
		skip       []byte // raw functions not sent
	}{
		{"simonvetter", capStartVServer(t), nil},
		// libmodbus 3.1.6 never answers FC 7, and answers a function it does not know
		// only after its 0.5 s receive timeout: a few of those are enough.
		{"libmodbus", capStartCServer(t), []byte{7, 11, 12, 21}},
	}
	var all []capRecord
	for _, srv := range servers {
		for _, client := range []struct {
			name string
			run  func(t *testing.T, addr string)
		}{
			{"goburrow", capGoburrow},
			{"raw", func(t *testing.T, addr string) { capRaw(t, addr, srv.skip) }},
			{"mbpoll", func(t *testing.T, addr string) { capMbpoll(t, mbpoll, addr) }},
		} {
			relay := capStartRelay(t, srv.addr)
			client.run(t, relay.addr)
			recs := relay.stop()
			if len(recs) < 4 {
				t.Fatalf("%s to %s: only %d ADUs recorded", client.name, srv.name, len(recs))
			}
			for i, r := range recs {
				f, c, reason := dpi.ParseReason(r.adu, r.dir)
				if c != "" {
					t.Errorf("%s to %s: %v % x: %q (%s)", client.name, srv.name, r.dir, r.adu, c, reason)
				}
				what := fmt.Sprintf("fc%02d", f.Function&^0x80)
				if f.Exception {
					what += "-exc"
				}
				dir := "req"
				if r.dir == dpi.Response {
					dir = "resp"
				}
				r.name = fmt.Sprintf("%s-%s-%03d-%s-%s.hex", client.name, srv.name, i, what, dir)
				all = append(all, r)
			}
		}
	}
	if !*updateCaptures {
		return
	}
	dir := filepath.Join("testdata", "captures")
	old, _ := filepath.Glob(filepath.Join(dir, "*.hex"))
	for _, name := range old {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if err := os.WriteFile(filepath.Join(dir, r.name), []byte(hex.EncodeToString(r.adu)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	capWriteFuzzCorpus(t)
}

// capWriteFuzzCorpus writes one corpus file per broken case of the table, so that
// `go test -fuzz` starts from every anomaly the parser knows, and a few streams.
func capWriteFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	old, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, name := range old {
		os.Remove(name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range parseCases() {
		if c.want == "" {
			continue
		}
		name := strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				return r
			}
			return '-'
		}, strings.ToLower(c.name))
		write(string(c.want)+"-"+name, c.adu)
	}
	stream := bytes.Join(streamFrames(), nil)
	write("stream", stream)
	write("stream-then-broken-length", append(append([]byte(nil), stream...), 0, 1, 0, 0, 0, 1, 1))
	write("stream-partial", stream[:len(stream)-3])
}

type capRecord struct {
	name string
	dir  dpi.Direction
	adu  []byte
}

// capRelay forwards one client connection at a time to a server and records every ADU
// in order; the clients used here wait for each answer, so the order is the exchange's.
type capRelay struct {
	addr string
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	recs []capRecord
	errs []error
}

func capStartRelay(t *testing.T, upstream string) *capRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &capRelay{addr: ln.Addr().String(), ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				r.fail(err)
				continue
			}
			r.wg.Add(2)
			go r.pipe(c, u, dpi.Request)
			go r.pipe(u, c, dpi.Response)
		}
	}()
	return r
}

func (r *capRelay) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// pipe copies ADUs from src to dst, recording each before forwarding it so that a
// client holding the answer knows it is recorded; either side closing closes both.
func (r *capRelay) pipe(src, dst net.Conn, dir dpi.Direction) {
	defer r.wg.Done()
	defer src.Close()
	defer dst.Close()
	var s dpi.Splitter
	for {
		n, err := src.Read(s.Space())
		s.Commit(n)
		for {
			adu, ok, ferr := s.Next()
			if ferr != nil {
				r.fail(ferr)
				return
			}
			if !ok {
				break
			}
			r.mu.Lock()
			r.recs = append(r.recs, capRecord{dir: dir, adu: append([]byte(nil), adu...)})
			r.mu.Unlock()
			if _, err := dst.Write(adu); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *capRelay) stop() []capRecord {
	r.ln.Close()
	r.wg.Wait()
	if len(r.errs) > 0 {
		panic(fmt.Sprintf("relay: %v", r.errs))
	}
	return r.recs
}

// capGoburrow sends every function goburrow has, and reads beyond the servers' maps
// (both hold fewer than 2000 items) for exception responses.
func capGoburrow(t *testing.T, addr string) {
	h := gmb.NewTCPClientHandler(addr)
	h.SlaveId = 1
	h.Timeout = 2 * time.Second
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c := gmb.NewClient(h)
	must := func(_ []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.ReadCoils(0, 10))
	must(c.ReadDiscreteInputs(1, 17))
	must(c.ReadHoldingRegisters(0, 10))
	must(c.ReadInputRegisters(0, 2))
	must(c.WriteSingleCoil(5, 0xFF00))
	must(c.WriteSingleCoil(5, 0x0000))
	must(c.WriteSingleRegister(7, 0xBEEF))
	must(c.WriteMultipleCoils(20, 10, []byte{0xCD, 0x01}))
	must(c.WriteMultipleRegisters(30, 3, []byte{0, 1, 0, 2, 0, 3}))
	must(c.ReadHoldingRegisters(30, 3))
	// Functions one server or both refuse answer with an exception; reads beyond the
	// map answer illegal data address.
	c.MaskWriteRegister(30, 0x00F2, 0x0025)
	c.ReadWriteMultipleRegisters(30, 2, 40, 2, []byte{0, 9, 0, 8})
	c.ReadFIFOQueue(3)
	if _, err := c.ReadHoldingRegisters(2000, 10); err == nil {
		t.Fatal("read beyond the map did not fail")
	}
	if _, err := c.ReadCoils(2000, 8); err == nil {
		t.Fatal("read beyond the map did not fail")
	}
}

// capRaw sends the public functions neither client has, one request at a time, and
// waits for each answer (an exception where the server does not implement it).
func capRaw(t *testing.T, addr string, skip []byte) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i, pdu := range [][]byte{
		{7},
		{8, 0, 0, 0x12, 0x34},
		{11},
		{12},
		{17},
		{20, 7, 6, 0, 1, 0, 0, 0, 1},
		{21, 9, 6, 0, 1, 0, 0, 0, 1, 0, 5},
		{22, 0, 4, 0, 0xF2, 0, 0x25},
		{24, 0, 1},
		{43, 14, 1, 0},
		{3, 0, 1, 0, 125},
		{1, 0, 0, 0, 99},
	} {
		if bytes.IndexByte(skip, pdu[0]) >= 0 {
			continue
		}
		if _, err := conn.Write(mbapTx(uint16(0x100+i), pdu...)); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		hdr := make([]byte, dpi.MBAPLen)
		if _, err := io.ReadFull(br, hdr); err != nil {
			t.Fatalf("fc %d: no answer: %v", pdu[0], err)
		}
		n, err := dpi.ADULen(hdr)
		if err != nil {
			t.Fatalf("fc %d: %v", pdu[0], err)
		}
		if _, err := io.ReadFull(br, make([]byte, n-dpi.MBAPLen)); err != nil {
			t.Fatalf("fc %d: %v", pdu[0], err)
		}
	}
}

// capMbpoll runs Debian's mbpoll once per table and write kind; reads beyond the map
// make it exit non-zero, which is expected there.
func capMbpoll(t *testing.T, bin, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"-m", "tcp", "-a", "1", "-0", "-1", "-o", "2", "-p", port}
	for _, c := range []struct {
		args   []string
		values []string
		fails  bool
	}{
		{args: []string{"-t", "0", "-r", "0", "-c", "12"}},
		{args: []string{"-t", "1", "-r", "0", "-c", "9"}},
		{args: []string{"-t", "3", "-r", "0", "-c", "2"}},
		{args: []string{"-t", "4", "-r", "0", "-c", "10"}},
		{args: []string{"-t", "4:float", "-r", "2", "-c", "1"}},
		{args: []string{"-t", "4", "-r", "8"}, values: []string{"1234"}},
		{args: []string{"-t", "4", "-r", "10"}, values: []string{"1", "2", "3"}},
		{args: []string{"-t", "0", "-r", "6"}, values: []string{"1"}},
		{args: []string{"-t", "0", "-r", "12"}, values: []string{"1", "0", "1"}},
		{args: []string{"-t", "4", "-r", "5000", "-c", "2"}, fails: true},
	} {
		args := append(append(append([]string(nil), base...), c.args...), host)
		args = append(args, c.values...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if (err != nil) != c.fails {
			t.Fatalf("mbpoll %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// capFreePort returns a port nothing listens on now, for servers that cannot listen on
// port 0 and say which port they got.
func capFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func capStartVServer(t *testing.T) string {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(capFreePort(t))
	s, err := smb.NewServer(&smb.ServerConfiguration{URL: "tcp://" + addr, Logger: log.New(io.Discard, "", 0)}, &testmodbus.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil { // listening when Start returns
		t.Fatalf("start simonvetter server on %s: %v", addr, err)
	}
	t.Cleanup(func() { s.Stop() })
	return addr
}

// capStartCServer starts the libmodbus test server; it prints "ready" once it accepts
// connections.
func capStartCServer(t *testing.T) string {
	t.Helper()
	bin := testmodbus.ServerBinary(t)
	port := capFreePort(t)
	cmd := exec.Command(bin, strconv.Itoa(port))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start libmodbus server: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		t.Fatalf("libmodbus server on port %d did not get ready: %q, %v", port, line, err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}
