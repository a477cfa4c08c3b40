package opcua

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

// clientCert makes a client certificate and key with GenerateCertificate.
func clientCert(t testing.TB, name string) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, name+".crt.pem"), filepath.Join(dir, name+".key.pem")
	if err := GenerateCertificate(cert, key, []string{"localhost", "127.0.0.1"}, "urn:edged:test:"+name, time.Hour); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// runErr runs the driver until Run returns by itself, which it must within limit.
func runErr(t testing.TB, d *Driver, limit time.Duration) error {
	t.Helper()
	e := drivertest.NewEmitter()
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	err := d.Run(ctx, e)
	if ctx.Err() != nil {
		t.Fatalf("Run kept retrying for %v; want it to return the fault (last health error: %v)", limit, e.LastHealthErr())
	}
	return err
}

func wantIn(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one naming %v", parts)
	}
	t.Logf("error: %v", err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not name %s", err, p)
		}
	}
}

// Against node-opcua: Basic256Sha256 with a certificate from GenerateCertificate that
// the server trusts, username auth, triggers with part ids, writes, and the faults a
// wrong certificate or password give.
func TestNodeOPCUA(t *testing.T) {
	cert, key := clientCert(t, "edged")
	strangerCert, strangerKey := clientCert(t, "stranger")
	srv := startNodeServer(t, "--trust", cert, "--toggle", "300")

	secured := func(c *Config) *Config {
		c.Endpoint = srv.endpoint
		c.SecurityPolicy, c.SecurityMode = PolicyBasic256Sha256, ModeSignAndEncrypt
		c.CertFile, c.KeyFile = cert, key
		return c
	}

	t.Run("stream SignAndEncrypt username", func(t *testing.T) {
		c := secured(&Config{Auth: AuthUsername, Username: "edged", Password: "secret", Nodes: []Node{
			{Name: "counter", NodeID: nodeID("Counter"), SamplingInterval: 0},
			{Name: "depth", NodeID: nodeID("Depth")},
		}})
		d := newDriver(t, "sec1", c)
		e := drivertest.NewEmitter()
		defer e.Close()
		stop, _ := run(t, d, e)
		e.WaitReadings(t, 4, 20*time.Second)
		rs := e.Readings()
		if rs[3].Scalars["counter"] <= rs[1].Scalars["counter"] || rs[3].Scalars["depth"] != 0.75 {
			t.Errorf("readings %v then %v: want a growing counter and depth 0.75", rs[1].Scalars, rs[3].Scalars)
		}
		stop()
	})

	t.Run("deadband", func(t *testing.T) {
		// Counter steps by 1; with an absolute deadband of 4.5 the server reports
		// only changes of 5 or more.
		c := secured(&Config{Nodes: []Node{{Name: "counter", NodeID: nodeID("Counter"), SamplingInterval: config.Duration(50 * time.Millisecond), Deadband: 4.5}}})
		d := newDriver(t, "db", c)
		e := drivertest.NewEmitter()
		defer e.Close()
		stop, _ := run(t, d, e)
		e.WaitReadings(t, 5, 20*time.Second)
		stop()
		rs := e.Readings()
		for i := 2; i < len(rs); i++ {
			if step := rs[i].Scalars["counter"] - rs[i-1].Scalars["counter"]; step != 0 && step < 5 {
				t.Errorf("counter went %v -> %v under a deadband of 4.5", rs[i-1].Scalars["counter"], rs[i].Scalars["counter"])
			}
		}
	})

	t.Run("Sign anonymous", func(t *testing.T) {
		c := secured(&Config{Nodes: []Node{{Name: "counter", NodeID: nodeID("Counter")}}})
		c.SecurityMode = ModeSign
		d := newDriver(t, "sec2", c)
		e := drivertest.NewEmitter()
		defer e.Close()
		stop, _ := run(t, d, e)
		e.WaitReadings(t, 2, 20*time.Second)
		stop()
	})

	t.Run("username over None", func(t *testing.T) {
		// The channel is plain; the password travels encrypted with the server's
		// certificate, as the endpoint's user token policy says.
		d := newDriver(t, "plain", &Config{Endpoint: srv.endpoint, Auth: AuthUsername, Username: "edged", Password: "secret",
			Nodes: []Node{{Name: "counter", NodeID: nodeID("Counter")}}})
		e := drivertest.NewEmitter()
		defer e.Close()
		stop, _ := run(t, d, e)
		e.WaitReadings(t, 2, 20*time.Second)
		stop()
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		c := secured(&Config{Nodes: []Node{{Name: "counter", NodeID: nodeID("Counter")}}})
		c.CertFile, c.KeyFile = strangerCert, strangerKey
		err := runErr(t, newDriver(t, "sec3", c), 20*time.Second)
		wantIn(t, err, `"sec3"`, "Basic256Sha256", "refused")
	})

	t.Run("wrong password", func(t *testing.T) {
		c := secured(&Config{Auth: AuthUsername, Username: "edged", Password: "guess", Nodes: []Node{{Name: "counter", NodeID: nodeID("Counter")}}})
		err := runErr(t, newDriver(t, "sec4", c), 20*time.Second)
		wantIn(t, err, `"sec4"`, "Basic256Sha256", "auth username", "refused")
	})

	t.Run("trigger with part id", func(t *testing.T) {
		c := secured(&Config{Mode: ModeTrigger,
			Nodes:   []Node{{Name: "force", NodeID: nodeID("Force")}, {Name: "depth", NodeID: nodeID("Depth")}},
			Trigger: Trigger{NodeID: nodeID("PartPresent"), PartIDNode: nodeID("PartID")},
		})
		d := newDriver(t, "press", c)
		e := drivertest.NewEmitter()
		defer e.Close()
		stop, _ := run(t, d, e)
		e.WaitReadings(t, 2, 20*time.Second)
		stop()
		for _, r := range e.Readings() {
			// The script sets Force to 1.5 times the part number with each new part,
			// so values and part id read in one Read agree.
			n, err := strconv.Atoi(strings.TrimPrefix(r.PartID, "P"))
			if err != nil || r.Scalars["force"] != float64(n)*1.5 || r.Scalars["depth"] != 0.75 {
				t.Errorf("reading part %q scalars %v: want part Pn with force n*1.5", r.PartID, r.Scalars)
			}
		}
	})

	t.Run("trigger while the pipeline is behind", func(t *testing.T) {
		// Each emit takes longer than a part takes to pass: parts queue, and each is
		// still read at its own edge, none skipped, none read twice.
		c := secured(&Config{Mode: ModeTrigger,
			Nodes:   []Node{{Name: "force", NodeID: nodeID("Force")}},
			Trigger: Trigger{NodeID: nodeID("PartPresent"), PartIDNode: nodeID("PartID")},
		})
		d := newDriver(t, "slow", c)
		e := &slowEmitter{Emitter: drivertest.NewEmitter(), delay: 900 * time.Millisecond}
		defer e.Close()
		stop, _ := run(t, d, e)
		e.WaitReadings(t, 4, 30*time.Second)
		stop()
		rs := e.Readings()
		for i, r := range rs {
			n, err := strconv.Atoi(strings.TrimPrefix(r.PartID, "P"))
			if err != nil || r.Scalars["force"] != float64(n)*1.5 {
				t.Errorf("reading part %q scalars %v: want part Pn with force n*1.5", r.PartID, r.Scalars)
			}
			if i > 0 {
				prev, _ := strconv.Atoi(strings.TrimPrefix(rs[i-1].PartID, "P"))
				if n != prev+1 {
					t.Errorf("part %s after %s: parts skipped or read twice while the pipeline was behind", r.PartID, rs[i-1].PartID)
				}
			}
		}
	})

	t.Run("write", func(t *testing.T) {
		c := secured(&Config{Nodes: []Node{{Name: "counter", NodeID: nodeID("Counter")}}})
		d := newDriver(t, "gate", c)
		e := drivertest.NewEmitter()
		defer e.Close()
		stop, _ := run(t, d, e)
		e.WaitHealth(t, true, 20*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, w := range []drivers.Write{
			{Target: nodeID("Reject"), Value: true},
			{Target: nodeID("Verdict"), Value: "NG"},
			{Target: nodeID("Count16"), Value: int64(-12)},
			{Target: nodeID("Force"), Value: int64(3)},
		} {
			if err := d.Write(ctx, w); err != nil {
				t.Errorf("write %v to %s: %v", w.Value, w.Target, err)
			}
		}
		for _, line := range []string{"write Reject true", `write Verdict "NG"`, "write Count16 -12", "write Force 3"} {
			if !srv.waitLine(func(l string) bool { return l == line }, 5*time.Second) {
				t.Errorf("server did not log %q; output:\n%s", line, srv.output())
			}
		}
		wantIn(t, d.Write(ctx, drivers.Write{Target: nodeID("Count16"), Value: int64(70000)}), "Line1.Count16", "70000", "Int16")
		wantIn(t, d.Write(ctx, drivers.Write{Target: nodeID("Counter"), Value: 1.0}), "Line1.Counter", "StatusBadNotWritable")
		wantIn(t, d.Write(ctx, drivers.Write{Target: nodeID("Missing"), Value: 1.0}), "Line1.Missing", "StatusBadNodeIDUnknown")
		stop()
	})

	t.Run("backpressure raises the sampling interval", func(t *testing.T) {
		// Counter changes every 50 ms; sampled every 50 ms the server sends ~20
		// notifications a second, sampled every 500 ms (MaxRateHz 2) about 2.
		c := secured(&Config{Nodes: []Node{{Name: "counter", NodeID: nodeID("Counter"), SamplingInterval: config.Duration(50 * time.Millisecond)}}})
		d := newDriver(t, "bp", c)
		e := drivertest.NewEmitter()
		defer e.Close()
		stop, _ := run(t, d, e)
		e.WaitReadings(t, 5, 20*time.Second)
		rate := func() float64 {
			n0, t0 := testutil.ToFloat64(d.m.notifications), time.Now()
			time.Sleep(1500 * time.Millisecond)
			return (testutil.ToFloat64(d.m.notifications) - n0) / time.Since(t0).Seconds()
		}
		if r := rate(); r < 10 {
			t.Fatalf("%.1f notifications/s unpressed, want about 20", r)
		}
		e.SetPressure(drivers.Pressure{Accepted: true, MaxRateHz: 2})
		waitFor(t, 5*time.Second, "sampling interval raised to 500ms", func() bool {
			return time.Duration(d.sampling.Load()) >= 500*time.Millisecond
		})
		if r := rate(); r > 4 {
			t.Errorf("%.1f notifications/s at MaxRateHz 2, want the server to sample at most ~2/s", r)
		}
		e.SetPressure(drivers.Pressure{Accepted: true})
		waitFor(t, 5*time.Second, "sampling interval back to 50ms", func() bool {
			return time.Duration(d.sampling.Load()) == 50*time.Millisecond
		})
		stop()
	})

	t.Run("probe", func(t *testing.T) {
		c := secured(&Config{Mode: ModeTrigger, Nodes: []Node{{Name: "force", NodeID: nodeID("Force")}},
			Trigger: Trigger{NodeID: nodeID("PartPresent"), PartIDNode: nodeID("PartID")}})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := newDriver(t, "probe", c).Probe(ctx); err != nil {
			t.Errorf("Probe of a good config: %v", err)
		}
		c.Trigger.PartIDNode = nodeID("PartNumber")
		wantIn(t, newDriver(t, "probe", c).Probe(ctx), `"probe"`, "trigger.part_id_node", "Line1.PartNumber", "StatusBadNodeIDUnknown")
	})
}

// A server restart mid-subscription: the driver says it is down, then recreates the
// session and the subscription by itself, and notifications flow again; no goroutine
// of the lost session outlives it.
func TestNodeRestart(t *testing.T) {
	srv := startNodeServer(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cert, key := clientCert(t, "edged")
	d := newDriver(t, "restart", &Config{Endpoint: srv.endpoint,
		SecurityPolicy: PolicyBasic256Sha256, SecurityMode: ModeSignAndEncrypt, CertFile: cert, KeyFile: key,
		Nodes: []Node{{Name: "counter", NodeID: nodeID("Counter")}}})
	e := drivertest.NewEmitter()
	defer e.Close()
	stop, _ := run(t, d, e)
	e.WaitReadings(t, 3, 20*time.Second)

	srv.Stop(t)
	e.WaitHealth(t, false, 10*time.Second)
	if err := e.LastHealthErr(); err == nil || !strings.Contains(err.Error(), srv.endpoint[:len(srv.endpoint)-len("/edged")]) {
		t.Errorf("health error %v does not name the endpoint", err)
	}
	srv.Start(t)
	e.WaitHealth(t, true, 20*time.Second)
	n := len(e.Readings())
	e.WaitReadings(t, n+3, 10*time.Second)
	rs := e.Readings()
	// The restarted script counts from 0 again: these values come from the new process.
	if last := rs[len(rs)-1].Scalars["counter"]; last > 200 {
		t.Errorf("counter %v after the restart: values do not come from the new server", last)
	}
	if got := testutil.ToFloat64(d.m.reconnects); got < 1 {
		t.Errorf("reconnects_total = %v, want at least 1", got)
	}
	stop()
}

// slowEmitter takes delay over each emit, as a pipeline that is behind does.
type slowEmitter struct {
	*drivertest.Emitter
	delay time.Duration
}

func (e *slowEmitter) Emit(ctx context.Context, r *drivers.Reading) drivers.Pressure {
	select {
	case <-time.After(e.delay):
	case <-ctx.Done():
		r.Release()
		return drivers.Pressure{}
	}
	return e.Emitter.Emit(ctx, r)
}
