package testmqtt

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartServesMQTT(t *testing.T) {
	url := Start(t)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("testmqtt").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", url, tok.Error())
	}
	defer c.Disconnect(100)

	got := make(chan string, 1)
	if tok := c.Subscribe("testmqtt/ping", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish("testmqtt/ping", 1, false, "pong"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case p := <-got:
		if p != "pong" {
			t.Fatalf("payload %q, want pong", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message not delivered by mosquitto")
	}
}

func TestStartTwiceGivesTwoBrokers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("both brokers on %s", a)
	}
}
