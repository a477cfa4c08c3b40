package modbus

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers/drivertest"
)

// rawServer is a minimal Modbus TCP server that answers read holding registers with
// 7s, and misbehaves on the request numbered bad (counted from 1 over all
// connections): it answers with the wrong transaction id, or not at all.
type rawServer struct {
	l        net.Listener
	bad      int64
	silent   bool
	requests atomic.Int64
	conns    atomic.Int64

	mu   sync.Mutex
	open []net.Conn
	wg   sync.WaitGroup
}

func startRawServer(t *testing.T, bad int64, silent bool) *rawServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{l: l, bad: bad, silent: silent}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *rawServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		s.mu.Lock()
		s.open = append(s.open, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *rawServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	var hdr [7]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[4:]))
		if n < 2 || n > 254 {
			return
		}
		pdu := make([]byte, n-1)
		if _, err := io.ReadFull(c, pdu); err != nil {
			return
		}
		if pdu[0] != 3 || len(pdu) != 5 {
			return
		}
		qty := int(binary.BigEndian.Uint16(pdu[3:]))
		tx := binary.BigEndian.Uint16(hdr[:])
		if s.requests.Add(1) == s.bad {
			if s.silent {
				continue
			}
			tx++
		}
		resp := binary.BigEndian.AppendUint16(nil, tx)
		resp = binary.BigEndian.AppendUint16(resp, 0)
		resp = binary.BigEndian.AppendUint16(resp, uint16(3+2*qty))
		resp = append(resp, hdr[6], 3, byte(2*qty))
		for range qty {
			resp = binary.BigEndian.AppendUint16(resp, 7)
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

func (s *rawServer) close() {
	s.l.Close()
	s.mu.Lock()
	for _, c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func TestOutOfStepRecovers(t *testing.T) {
	for _, c := range []struct {
		name   string
		silent bool
		want   string
	}{
		{"wrong transaction id", false, "response transaction id"},
		{"no answer", true, "i/o timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := startRawServer(t, 3, c.silent)
			cfg := testConfig(srv.l.Addr().String(), Register{Name: "a", Address: 0}, Register{Name: "b", Address: 1})
			cfg.Timeout = config.Duration(100 * time.Millisecond)
			d := newDriver(t, "plc", cfg)
			e := newRecEmitter()
			drivertest.Start(t, d, e)
			down := e.waitHealth(t, false, 0, 5*time.Second)
			if down.err == nil || !strings.Contains(down.err.Error(), c.want) || !strings.Contains(down.err.Error(), `source "plc": read holding 0..1`) {
				t.Errorf("down because %v, want %q", down.err, c.want)
			}
			e.waitHealth(t, true, 2, 5*time.Second)
			e.waitReadings(t, 2, 5*time.Second)
			if r := e.last(); r.Scalars["a"] != 7 || r.Scalars["b"] != 7 {
				t.Errorf("reading after recovery: %v", r.Scalars)
			}
			if n := srv.conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2 (the out-of-step one dropped, one new)", n)
			}
		})
	}
}
