package publish

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestBrokerPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	b := NewBroker(addr, testLog(t))
	err = b.Run(context.Background())
	if err == nil {
		t.Fatal("Run succeeded on a port in use")
	}
	for _, want := range []string{addr, "address already in use", "mqtt.embedded_listen", "stop the other broker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	select {
	case <-b.Ready():
		t.Error("Ready closed although the bind failed")
	default:
	}
	if b.Addr() != "" {
		t.Errorf("Addr() = %q after a failed bind", b.Addr())
	}
}

func TestBrokerLifecycle(t *testing.T) {
	log, logs := capture(t)
	b := NewBroker("127.0.0.1:0", log)
	if b.Addr() != "" {
		t.Fatalf("Addr() = %q before Run", b.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	<-b.Ready()
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatalf("dial %s: %v", b.Addr(), err)
	}
	conn.Close()
	if err := b.Run(ctx); err == nil {
		t.Error("a second Run was accepted")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := net.Dial("tcp", b.Addr()); err == nil {
		t.Error("still listening after Run returned")
	}
	for _, chatter := range []string{"added hook", "attached listener", "mochi mqtt starting"} {
		if strings.Contains(logs.String(), chatter) {
			t.Errorf("mochi's info line %q reached the log", chatter)
		}
	}
}

// TestBrokerDropsStalePuback puts the broker in the state a failed PUBACK write leaves it
// in (a PUBACK kept in the session for a message it never forwarded), then resumes the
// session: the broker must not replay that PUBACK, or the client would take the lost
// message as delivered.
func TestBrokerDropsStalePuback(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	const id = "stale-ack-client"

	first := rawConnect(t, b.Addr(), id)
	cl, ok := b.srv.Clients.Get(id)
	if !ok {
		t.Fatal("client not registered")
	}
	cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7})
	first.Close()
	waitFor(t, "the broker to notice the closed connection", cl.Closed)

	second := rawConnect(t, b.Addr(), id)
	defer second.Close()
	// Anything the broker replays follows the CONNACK at once; a short read window
	// is enough to see it on loopback.
	_ = second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var buf [16]byte
	n, err := second.Read(buf[:])
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("after resuming the session the broker sent % x (err %v), want nothing", buf[:n], err)
	}
}

// rawConnect opens an MQTT 3.1.1 session without clean-session over a bare socket, so
// that the test sees every byte the broker sends.
func rawConnect(t *testing.T, addr, clientID string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x00, 0, 30, 0, byte(len(clientID))}
	body = append(body, clientID...)
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	var ack [4]byte
	_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x", ack)
	}
	return conn
}
