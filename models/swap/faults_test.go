package swap_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/fetch"
	"github.com/edgedrun/edged/models/swap"
)

// TestPushFaultsRefused pushes every kind of bad model over the HTTP route while the
// line runs: each is answered with the status, step and reason, the old model keeps
// serving (new results name version 1), the repository holds what it held before, and
// the audit log has one more line saying why.
func TestPushFaultsRefused(t *testing.T) {
	l := newLine(t, lineOpts{maxSize: 1 << 20})
	_, otherPriv, err := models.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	type push struct {
		path   string
		m      *models.Manifest
		model  []byte
		parts  []part // instead of m and model
		status int
		step   string
		reason string // in the error text
	}
	cases := map[string]func() push{
		"hash mismatch": func() push {
			m, onnx := build(t, "2", good)
			_, other := build(t, "3", good)
			sum := sha256.Sum256(other)
			m.SHA256 = hex.EncodeToString(sum[:])
			l.sign(m)
			return push{m: m, model: onnx, status: 422, step: swap.StepInstalled, reason: models.ErrHashMismatch.Error()}
		},
		"bad signature": func() push {
			m, onnx := l.signed("2", good)
			m.Postprocess.Threshold = 0.9 // changed after signing
			return push{m: m, model: onnx, status: 403, step: swap.StepVerified, reason: models.ErrBadSignature.Error()}
		},
		"unknown key": func() push {
			m, onnx := build(t, "2", good)
			if err := models.Sign(m, otherPriv); err != nil {
				t.Fatal(err)
			}
			return push{m: m, model: onnx, status: 403, step: swap.StepVerified, reason: models.ErrUnknownKey.Error()}
		},
		"unsigned": func() push {
			m, onnx := build(t, "2", good)
			return push{m: m, model: onnx, status: 403, step: swap.StepVerified, reason: models.ErrUnsigned.Error()}
		},
		"truncated upload": func() push {
			m, onnx := l.signed("2", good)
			return push{m: m, model: onnx[:len(onnx)-10], status: 422, step: swap.StepInstalled, reason: "truncated"}
		},
		"manifest size above max": func() push {
			m, onnx := build(t, "2", good)
			m.Size = 2 << 20
			l.sign(m)
			return push{m: m, model: onnx, status: 413, step: swap.StepReceived, reason: "above the largest model accepted"}
		},
		"body longer than the manifest size": func() push {
			m, onnx := l.signed("2", good)
			return push{m: m, model: append(onnx, 1, 2, 3), status: 413, step: swap.StepInstalled, reason: models.ErrTooLarge.Error()}
		},
		"not onnx": func() push {
			m, onnx := l.signed("2", notONNX)
			return push{m: m, model: onnx, status: 422, step: swap.StepLoaded, reason: "load"}
		},
		"input shape does not match the inspection": func() push {
			m, onnx := l.signed("2", wideInput)
			return push{m: m, model: onnx, status: 422, step: swap.StepChecked, reason: `inspection "press"`}
		},
		"fails at run": func() push {
			m, onnx := l.signed("2", failsAtRun)
			return push{m: m, model: onnx, status: 422, step: swap.StepWarmed, reason: "run 1 of 3"}
		},
		"nan output": func() push {
			m, onnx := l.signed("2", nanOut)
			return push{m: m, model: onnx, status: 422, step: swap.StepWarmed, reason: "NaN"}
		},
		"golden output differs": func() push {
			m, onnx := l.signed("2", badGolden)
			return push{m: m, model: onnx, status: 422, step: swap.StepGolden, reason: "frame 0 output[0]"}
		},
		"golden length differs": func() push {
			m, onnx := build(t, "2", good)
			m.Golden[1].Input = m.Golden[1].Input[:3]
			l.sign(m)
			return push{m: m, model: onnx, status: 422, step: swap.StepChecked, reason: "golden[1] has 3 input"}
		},
		"name traversal escaped": func() push {
			m, onnx := l.signed("2", good)
			return push{path: "/v1/models/%2e%2e%2fx/2", m: m, model: onnx, status: 400, step: swap.StepReceived, reason: `"../x"`}
		},
		"version traversal escaped": func() push {
			m, onnx := l.signed("2", good)
			return push{path: "/v1/models/lin/%2e%2e%2fx", m: m, model: onnx, status: 400, step: swap.StepReceived, reason: `"../x"`}
		},
		"name traversal in the manifest": func() push {
			m, onnx := build(t, "2", good)
			m.Name = "../x"
			l.sign(m)
			return push{path: "/v1/models/%2e%2e%2fx/2", m: m, model: onnx, status: 400, step: swap.StepReceived, reason: `"../x"`}
		},
		"path names another version": func() push {
			m, onnx := l.signed("2", good)
			return push{path: "/v1/models/lin/3", m: m, model: onnx, status: 400, step: swap.StepReceived, reason: "the manifest names"}
		},
		"version exists with other content": func() push {
			m, onnx := l.signed("1", nanOut)
			return push{m: m, model: onnx, status: 409, step: swap.StepInstalled, reason: models.ErrVersionExists.Error()}
		},
		"no model part": func() push {
			m, _ := l.signed("2", good)
			mb, _ := json.Marshal(m)
			return push{path: "/v1/models/lin/2", parts: []part{{"manifest", mb}}, status: 400, step: swap.StepInstalled, reason: `"model"`}
		},
		"model part first": func() push {
			m, onnx := l.signed("2", good)
			mb, _ := json.Marshal(m)
			return push{path: "/v1/models/lin/2", parts: []part{{"model", onnx}, {"manifest", mb}}, status: 400, step: swap.StepReceived, reason: `"manifest"`}
		},
	}
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			c := cases[name]()
			before, audits := l.listing(), len(l.audit())
			path := c.path
			if path == "" {
				path = "/v1/models/" + c.m.Name + "/" + c.m.Version
			}
			var r reply
			if c.parts != nil {
				r = l.putParts(path, c.parts)
			} else {
				r = l.put(path, c.m, c.model)
			}
			if r.status != c.status || r.err.Step != c.step || !strings.Contains(r.err.Error, c.reason) {
				t.Fatalf("reply %d step %q error %q; want %d step %q and an error with %q", r.status, r.err.Step, r.err.Error, c.status, c.step, c.reason)
			}
			t.Logf("%d %s: %s", r.status, r.err.Step, r.err.Error)
			l.serving("1")
			if after := l.listing(); !slices.Equal(after, before) {
				t.Errorf("repository holds %v after the refusal, held %v", after, before)
			}
			recs := l.audit()
			if len(recs) != audits+1 {
				t.Fatalf("audit log has %d lines, had %d: want one for the refusal", len(recs), audits)
			}
			if last := recs[len(recs)-1]; last.Result == "ok" || last.Result != r.err.Error {
				t.Errorf("audit line %+v does not give the reason %q", last, r.err.Error)
			}
		})
	}
	if v := l.sink.seen(); !slices.Equal(v, []string{"1"}) {
		t.Errorf("results named versions %v; only 1 ever served", v)
	}
	// Refusals are counted, and a refused name never labels a metric.
	refused := swapsCounted(t, l, modelName, swap.ResultRefused) + swapsCounted(t, l, "unknown", swap.ResultRefused)
	failed := swapsCounted(t, l, modelName, swap.ResultFailed)
	if refused+failed != float64(len(cases)) || failed != 6 {
		t.Errorf("edged_model_swaps_total counted %v refused and %v failed, want %d in all, 6 failed", refused, failed, len(cases))
	}
	// Every refusal was published with its reason and the step that failed.
	n := 0
	for _, ev := range l.ev.all() {
		if ev.Step == swap.StepFailed {
			n++
			if ev.Reason == "" || ev.FailedStep == "" {
				t.Errorf("failed event without reason or step: %+v", ev)
			}
		}
	}
	if n != len(cases) {
		t.Errorf("%d failed events for %d refusals", n, len(cases))
	}
}

// TestPushTraversalPathNotServed: a literal "../x" in the path never reaches the
// handler (the mux cleans the path and redirects), and nothing is installed.
func TestPushTraversalPathNotServed(t *testing.T) {
	l := newLine(t, lineOpts{})
	m, onnx := l.signed("2", good)
	before := l.listing()
	for _, path := range []string{"/v1/models/../x/2", "/v1/models/lin/../x"} {
		r := l.put(path, m, onnx)
		if r.status == http.StatusOK {
			t.Fatalf("PUT %s answered 200: %s", path, r.raw)
		}
		t.Logf("PUT %s: %d", path, r.status)
	}
	l.serving("1")
	if after := l.listing(); !slices.Equal(after, before) {
		t.Errorf("repository holds %v, held %v", after, before)
	}
}

// TestPushFaultsDirect refuses through Push itself (the path the MQTT command takes
// once downloaded), checking the errors wrap the repository's and keyring's sentinels.
func TestPushFaultsDirect(t *testing.T) {
	l := newLine(t, lineOpts{})
	ctx := context.Background()
	m, onnx := l.signed("2", good)
	_, err := l.mgr.Push(ctx, swap.Request{Manifest: m, Body: strings.NewReader(string(onnx[:100])), Via: "test"})
	var se *swap.Error
	if !errors.Is(err, models.ErrTruncated) || !errors.As(err, &se) || se.Result != swap.ResultRefused || se.Step != swap.StepInstalled {
		t.Fatalf("truncated body: %v (%+v)", err, se)
	}
	m2, onnx2 := build(t, "2", good)
	_, err = l.mgr.Push(ctx, swap.Request{Manifest: m2, Body: strings.NewReader(string(onnx2)), Via: "test"})
	if !errors.Is(err, models.ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
	bad := *m
	bad.Name = "../x"
	_, err = l.mgr.Push(ctx, swap.Request{Manifest: &bad, Body: strings.NewReader(string(onnx)), Via: "test"})
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !strings.Contains(err.Error(), `"../x"`) {
		t.Fatalf("name ../x: %v", err)
	}
	l.serving("1")
}

// TestUnsignedAllowed: with allow_unsigned an unsigned model is taken, but a signature
// that does not verify never is.
func TestUnsignedAllowed(t *testing.T) {
	l := newLine(t, lineOpts{allowUnsigned: true})
	m, onnx := build(t, "2", good)
	if r := l.put("/v1/models/lin/2", m, onnx); r.status != http.StatusOK {
		t.Fatalf("unsigned push with allow_unsigned: %d %s", r.status, r.raw)
	}
	l.serving("2")
	m3, onnx3 := l.signed("3", good)
	m3.Description = "changed after signing"
	if r := l.put("/v1/models/lin/3", m3, onnx3); r.status != http.StatusForbidden {
		t.Fatalf("badly signed push with allow_unsigned: %d %s", r.status, r.raw)
	}
	l.serving("2")
}

// TestDownloadStallRefused: an MQTT push whose download URL sends a little and then
// nothing is given up after the stall timeout and one retry; the old model serves.
func TestDownloadStallRefused(t *testing.T) {
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	l := newLine(t, lineOpts{fetch: fetch.Config{Client: client, StallTimeout: 200 * time.Millisecond, Retries: 1, Backoff: 10 * time.Millisecond}})
	m, onnx := l.signed("2", good)
	quit := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", itoa(len(onnx)))
		w.WriteHeader(http.StatusOK)
		w.Write(onnx[:64])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-quit:
		}
	}))
	defer srv.Close()
	defer close(quit)
	cmd := mustCommand(t, map[string]any{"id": "stall-1", "action": "push", "manifest": m, "url": srv.URL + "/lin-2.onnx?token=secret"})
	before := l.listing()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err := l.mgr.Handle(ctx, cmd, "mqtt")
	if err == nil {
		t.Fatal("a stalled download was taken")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error shows the URL's query: %v", err)
	}
	t.Logf("stalled download: %v", err)
	var se *swap.Error
	if !errors.As(err, &se) || se.Step != swap.StepInstalled {
		t.Errorf("stalled download failed at %+v, want step installed", se)
	}
	l.serving("1")
	if after := l.listing(); !slices.Equal(after, before) {
		t.Errorf("repository holds %v, held %v", after, before)
	}
	evs := l.ev.of("stall-1")
	if len(evs) == 0 || evs[len(evs)-1].Step != swap.StepFailed || evs[len(evs)-1].FailedStep != swap.StepInstalled {
		t.Errorf("events of the stalled push: %+v", evs)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func mustCommand(t testing.TB, v any) *swap.Command {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	c, err := swap.ParseCommand(b)
	if err != nil {
		t.Fatalf("command %s: %v", b, err)
	}
	return c
}
