package publish

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedrun/edged/spool"
)

type command struct {
	verb    string
	payload string
}

// TestCommands: messages on the box's cmd/{verb} topics reach Config.Commands, also
// after the connection was lost and made again (the subscription is renewed), and only
// one topic level below cmd/ counts.
func TestCommands(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testCommands(t, false) })
	// With a spool every connection has a client of its own.
	t.Run("spool", func(t *testing.T) { testCommands(t, true) })
}

func testCommands(t *testing.T, spooled bool) {
	b := startBroker(t, "127.0.0.1:0")
	px := startProxy(t, b.Addr())
	got := make(chan command, 16)
	cfg := testConfig(px.url())
	if spooled {
		cfg.Spool, _ = openSpool(t, spool.Options{Dir: t.TempDir()})
	}
	cfg.Commands = func(verb string, payload []byte) {
		got <- command{verb, string(payload)}
	}
	p := startPublisher(t, cfg)
	if want := "edged/v1/s1/l1/n1/cmd/model"; p.CommandTopic("model") != want {
		t.Fatalf("command topic %q, want %q", p.CommandTopic("model"), want)
	}
	p.waitConnected(t)
	sender := commandSender(t, "tcp://"+b.Addr())
	expect := func(verb, payload string) {
		t.Helper()
		// The subscription is made right after the connection; send until it is there.
		deadline := time.After(waitTimeout)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			send(t, sender, p.CommandTopic(verb), payload)
			select {
			case c := <-got:
				if c.verb != verb || c.payload != payload {
					t.Fatalf("command %+v, want %s %q", c, verb, payload)
				}
				for len(got) > 0 { // repeats of the same command sent while waiting
					<-got
				}
				return
			case <-deadline:
				t.Fatalf("command %s %q never reached the box", verb, payload)
			case <-tick.C:
			}
		}
	}
	expect("model", `{"action":"rollback","name":"el-defect"}`)
	send(t, sender, p.CommandTopic("model")+"/extra", "x")
	px.setDown(true)
	px.sever()
	waitFor(t, "connection lost", func() bool { return !p.Connected() })
	px.setDown(false)
	p.waitConnected(t)
	expect("model", `{"action":"activate"}`)
	select {
	case c := <-got:
		t.Errorf("unexpected command %+v", c)
	default:
	}
}

func commandSender(t *testing.T, broker string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(uniqueID("cmd")).SetProtocolVersion(4).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func send(t *testing.T, c mqtt.Client, topic, payload string) {
	t.Helper()
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}
