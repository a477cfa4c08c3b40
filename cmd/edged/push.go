package main

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/swap"
	"github.com/edgedrun/edged/progress"
	"github.com/edgedrun/edged/publish"
)

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// remoteFlags are the flags of the model commands that act on boxes.
type remoteFlags struct {
	fs *flag.FlagSet
	// Boxes by their admin API.
	boxes, token string
	// A fleet through the broker.
	broker, site, line, nodes, canary string
	canaryCount                       int
	user, password                    string
	discover                          time.Duration
	// What to do.
	manifest, model, modelURL, name, version string
	stage                                    bool
	timeout                                  time.Duration
}

func newRemoteFlags(verb string) *remoteFlags {
	f := &remoteFlags{fs: flag.NewFlagSet("edged model "+verb, flag.ContinueOnError)}
	fs := f.fs
	fs.StringVar(&f.boxes, "box", "", "comma-separated admin API base URLs of boxes (http://10.0.3.21:8080)")
	fs.StringVar(&f.token, "token", os.Getenv("EDGED_ADMIN_TOKEN"), "admin bearer token of the boxes (default $EDGED_ADMIN_TOKEN)")
	fs.StringVar(&f.broker, "broker", "", "MQTT broker URL of the fleet (tcp://broker:1883)")
	fs.StringVar(&f.site, "site", "", "site of the fleet's boxes (node.site)")
	fs.StringVar(&f.line, "line", "", "line of the fleet's boxes (node.line)")
	fs.StringVar(&f.nodes, "nodes", "", "comma-separated node names (default: every box of the line that is online)")
	fs.StringVar(&f.canary, "canary", "", "comma-separated nodes that go first; the rest only if all of them swap")
	fs.IntVar(&f.canaryCount, "canary-count", 0, "this many nodes (in name order) go first, as with -canary")
	fs.StringVar(&f.user, "user", "", "MQTT username")
	fs.StringVar(&f.password, "password", os.Getenv("EDGED_MQTT_PASSWORD"), "MQTT password (default $EDGED_MQTT_PASSWORD)")
	fs.DurationVar(&f.discover, "discover", 2*time.Second, "how long to collect the line's online boxes from their retained status")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Minute, "how long to wait for each wave of boxes")
	switch verb {
	case "push":
		fs.StringVar(&f.manifest, "manifest", "", "signed manifest (edged model sign) (required)")
		fs.StringVar(&f.model, "model", "", "model file, uploaded to each -box")
		fs.StringVar(&f.modelURL, "model-url", "", "where the fleet's boxes download the model file (the plant's model server)")
		fs.BoolVar(&f.stage, "stage", false, "install and check, but keep the active version")
	case "activate":
		fs.StringVar(&f.name, "name", "", "model name (required)")
		fs.StringVar(&f.version, "version", "", "installed version to activate (required)")
	case "rollback":
		fs.StringVar(&f.name, "name", "", "model name (required)")
	}
	return f
}

// modelRemote runs push, activate, rollback and list against boxes or a fleet.
func modelRemote(verb string, args []string) error {
	f := newRemoteFlags(verb)
	if err := f.fs.Parse(args); err != nil {
		return errUsage
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", f.fs.Arg(0))
	}
	cmd := &swap.Command{ID: newRequestID(), Action: verb, Name: f.name, Version: f.version}
	var body func() (io.Reader, func() error, error)
	switch verb {
	case "push":
		if f.manifest == "" {
			return errors.New("-manifest: required")
		}
		b, err := os.ReadFile(f.manifest)
		if err != nil {
			return err
		}
		m, err := models.ParseManifest(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f.manifest, err)
		}
		cmd.Manifest, cmd.Name, cmd.Version, cmd.Stage, cmd.URL = m, m.Name, m.Version, f.stage, f.modelURL
		if f.model != "" {
			size, sum, err := hashFile(f.model)
			if err != nil {
				return err
			}
			if size != m.Size || !strings.EqualFold(sum, m.SHA256) {
				return fmt.Errorf("%s does not match %s (%d bytes, sha256 %s; the manifest says %d, %s): sign it again", f.model, f.manifest, size, sum, m.Size, m.SHA256)
			}
		}
		body = func() (io.Reader, func() error, error) {
			file, err := os.Open(f.model)
			if err != nil {
				return nil, nil, err
			}
			return file, file.Close, nil
		}
	case "activate":
		if f.name == "" || f.version == "" {
			return errors.New("-name and -version: required")
		}
	case "rollback":
		if f.name == "" {
			return errors.New("-name: required")
		}
	}
	switch {
	case f.boxes != "" && f.broker != "":
		return errors.New("give -box or -broker, not both")
	case f.boxes != "":
		if verb == "push" && f.model == "" {
			return errors.New("-model: required with -box (the file is uploaded to each box)")
		}
		return httpRemote(f, verb, cmd, body)
	case f.broker != "":
		if verb == "list" {
			return errors.New("list reads the boxes' admin API: give -box")
		}
		if verb == "push" && f.modelURL == "" {
			return errors.New("-model-url: required with -broker (each box downloads the model from there)")
		}
		if f.site == "" || f.line == "" {
			return errors.New("-site and -line: required with -broker")
		}
		return fleetRemote(f, cmd)
	default:
		return errNoTarget
	}
}

func newRequestID() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// httpRemote calls each box's admin API, one box after another so that a failure stops
// the rollout before it reaches the next box.
func httpRemote(f *remoteFlags, verb string, cmd *swap.Command, body func() (io.Reader, func() error, error)) error {
	client := &http.Client{Timeout: f.timeout}
	for _, box := range splitList(f.boxes) {
		box = strings.TrimRight(box, "/")
		start := time.Now()
		var (
			req *http.Request
			err error
		)
		switch verb {
		case "push":
			req, err = uploadRequest(box, cmd, body)
		case "activate":
			req, err = http.NewRequest(http.MethodPost, box+"/v1/models/"+url.PathEscape(cmd.Name)+"/"+url.PathEscape(cmd.Version)+"/activate", nil)
		case "rollback":
			req, err = http.NewRequest(http.MethodPost, box+"/v1/models/"+url.PathEscape(cmd.Name)+"/rollback", nil)
		case "list":
			req, err = http.NewRequest(http.MethodGet, box+"/v1/models", nil)
		}
		if err != nil {
			return err
		}
		if f.token != "" {
			req.Header.Set("Authorization", "Bearer "+f.token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("%s: %w", box, err)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", box, err)
		}
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error string `json:"error"`
				Step  string `json:"step"`
			}
			if json.Unmarshal(b, &e) == nil && e.Error != "" {
				if e.Step != "" {
					return fmt.Errorf("%s: %s refused at %s (%s): %s", box, verb, e.Step, resp.Status, e.Error)
				}
				return fmt.Errorf("%s: %s refused (%s): %s", box, verb, resp.Status, e.Error)
			}
			return fmt.Errorf("%s: %s: %s", box, resp.Status, strings.TrimSpace(string(b)))
		}
		if verb == "list" {
			fmt.Printf("%s\n%s\n", box, indentJSON(b))
			continue
		}
		var rep swap.Report
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("%s: reply: %w", box, err)
		}
		fmt.Printf("%s: %s\n", box, describeReport(verb, &rep, time.Since(start)))
	}
	return nil
}

// uploadRequest streams the manifest and the model file as multipart parts, manifest
// first, without holding the model in memory.
func uploadRequest(box string, cmd *swap.Command, body func() (io.Reader, func() error, error)) (*http.Request, error) {
	mb, err := json.Marshal(cmd.Manifest)
	if err != nil {
		return nil, err
	}
	src, closeSrc, err := body()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		defer closeSrc()
		err := func() error {
			w, err := mw.CreateFormFile("manifest", "manifest.json")
			if err != nil {
				return err
			}
			if _, err := w.Write(mb); err != nil {
				return err
			}
			if w, err = mw.CreateFormFile("model", "model.onnx"); err != nil {
				return err
			}
			if _, err := io.Copy(w, src); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	u := box + "/v1/models/" + url.PathEscape(cmd.Name) + "/" + url.PathEscape(cmd.Version)
	if cmd.Stage {
		u += "?stage=1"
	}
	req, err := http.NewRequest(http.MethodPut, u, pr)
	if err != nil {
		pr.Close()
		return nil, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return req, nil
}

func describeReport(verb string, r *swap.Report, took time.Duration) string {
	switch {
	case r.Staged:
		return fmt.Sprintf("staged %s %s (not active) in %s", r.Name, r.Version, took.Round(time.Millisecond))
	case verb == "rollback":
		return fmt.Sprintf("rolled %s back to %s (from %s) in %s", r.Name, r.Version, r.Previous, took.Round(time.Millisecond))
	default:
		s := fmt.Sprintf("%s %s active in %s", r.Name, r.Version, took.Round(time.Millisecond))
		if r.Previous != "" {
			s += fmt.Sprintf(" (was %s; edged model rollback -name %s goes back)", r.Previous, r.Name)
		}
		return s
	}
}

func indentJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

// fleetEvent is what a box reports about a command on its event topic.
type fleetEvent struct {
	node   string
	step   string
	reason string
}

// fleetRemote sends the command to the line's boxes through the broker, canaries
// first, and waits for each box's outcome on its event topic.
func fleetRemote(f *remoteFlags, cmd *swap.Command) error {
	prefix := "edged/v1/" + f.site + "/" + f.line + "/"
	events := make(chan fleetEvent, 1024)
	var (
		mu     sync.Mutex
		online = map[string]bool{}
	)
	opts := mqtt.NewClientOptions().AddBroker(f.broker).SetClientID("edged-push-" + cmd.ID).
		SetProtocolVersion(4).SetAutoReconnect(true).SetCleanSession(true).
		SetUsername(f.user).SetPassword(f.password).SetConnectTimeout(10 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect to %s: %v", f.broker, tokenErr(tok))
	}
	defer c.Disconnect(250)
	sub := func(topic string, h mqtt.MessageHandler) error {
		if tok := c.Subscribe(topic, 1, h); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return fmt.Errorf("subscribe %s: %v", topic, tokenErr(tok))
		}
		return nil
	}
	if err := sub(prefix+"+/event", func(_ mqtt.Client, m mqtt.Message) {
		var ev publish.Event
		if json.Unmarshal(m.Payload(), &ev) != nil || ev.Kind != "model" {
			return
		}
		fields, _ := ev.Fields.(map[string]any)
		if id, _ := fields["id"].(string); id != cmd.ID {
			return
		}
		step, _ := fields["step"].(string)
		reason, _ := fields["reason"].(string)
		select {
		case events <- fleetEvent{node: ev.Node, step: step, reason: reason}:
		default:
		}
	}); err != nil {
		return err
	}
	nodes := splitList(f.nodes)
	if len(nodes) == 0 {
		if err := sub(prefix+"+/status", func(_ mqtt.Client, m mqtt.Message) {
			parts := strings.Split(m.Topic(), "/")
			if len(parts) != 6 {
				return
			}
			mu.Lock()
			online[parts[4]] = string(m.Payload()) == publish.StatusOnline
			mu.Unlock()
		}); err != nil {
			return err
		}
		time.Sleep(f.discover) // retained statuses arrive right after the subscription
		mu.Lock()
		for n, up := range online {
			if up {
				nodes = append(nodes, n)
			}
		}
		mu.Unlock()
		if len(nodes) == 0 {
			return fmt.Errorf("no box of %s/%s is online at %s", f.site, f.line, f.broker)
		}
	}
	sort.Strings(nodes)
	var canary []string
	switch {
	case f.canary != "":
		canary = splitList(f.canary)
		for _, n := range canary {
			if !slices.Contains(nodes, n) {
				return fmt.Errorf("-canary: node %q is not among the boxes pushed to (%s)", n, strings.Join(nodes, ", "))
			}
		}
	case f.canaryCount > 0:
		canary = nodes[:min(f.canaryCount, len(nodes))]
	}
	var rest []string
	for _, n := range nodes {
		if !slices.Contains(canary, n) {
			rest = append(rest, n)
		}
	}
	sent := *cmd
	if sent.Action == "push" {
		// A push names its model by the signed manifest alone.
		sent.Name, sent.Version = "", ""
	}
	payload, err := json.Marshal(&sent)
	if err != nil {
		return err
	}
	start := time.Now()
	fmt.Printf("%s %s to %d boxes of %s/%s (request %s)\n", cmd.Action, cmdSubject(cmd), len(nodes), f.site, f.line, cmd.ID)
	waves := [][]string{canary, rest}
	names := []string{"canary", "fleet"}
	if len(canary) == 0 {
		waves, names = [][]string{rest}, []string{"fleet"}
	}
	bar := progress.New(os.Stdout, cmd.Action+" "+cmdSubject(cmd), int64(len(nodes)), progress.Options{Unit: "boxes"})
	defer bar.Done()
	for w, wave := range waves {
		if len(wave) == 0 {
			continue
		}
		for _, n := range wave {
			tok := c.Publish(prefix+n+"/cmd/model", 1, false, payload)
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				return fmt.Errorf("send to %s: %v", n, tokenErr(tok))
			}
		}
		failed, err := waitWave(events, wave, f.timeout, start, bar)
		if err != nil {
			return err
		}
		if len(failed) > 0 {
			if names[w] == "canary" {
				return fmt.Errorf("canary failed on %s: the other %d boxes were not sent the command", strings.Join(failed, ", "), len(rest))
			}
			return fmt.Errorf("%d of %d boxes failed: %s", len(failed), len(nodes), strings.Join(failed, ", "))
		}
		bar.Println(fmt.Sprintf("%s: %d boxes done at %s", names[w], len(wave), time.Since(start).Round(time.Millisecond)))
	}
	bar.Done()
	fmt.Printf("all %d boxes done in %s\n", len(nodes), time.Since(start).Round(time.Millisecond))
	return nil
}

func cmdSubject(c *swap.Command) string {
	if c.Version != "" {
		return c.Name + " " + c.Version
	}
	return c.Name
}

// waitWave waits until every node of the wave has reported its outcome, showing each
// as it comes; it returns the nodes that failed.
func waitWave(events <-chan fleetEvent, wave []string, timeout time.Duration, start time.Time, bar *progress.Bar) ([]string, error) {
	pending := map[string]bool{}
	for _, n := range wave {
		pending[n] = true
	}
	var failed []string
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for len(pending) > 0 {
		select {
		case ev := <-events:
			if !pending[ev.node] {
				continue
			}
			switch ev.step {
			case "activated", "staged", "rolled_back":
				delete(pending, ev.node)
				bar.Note(1, fmt.Sprintf("%s %s at %s", ev.node, ev.step, time.Since(start).Round(time.Millisecond)))
			case "failed":
				delete(pending, ev.node)
				failed = append(failed, ev.node)
				bar.Add(1)
				bar.Println(fmt.Sprintf("%s failed: %s", ev.node, ev.reason))
			}
		case <-ctx.Done():
			var left []string
			for n := range pending {
				left = append(left, n)
			}
			sort.Strings(left)
			return nil, fmt.Errorf("no outcome within %s from %s (offline, or an older edged without model commands?)", timeout, strings.Join(left, ", "))
		}
	}
	return failed, nil
}

func tokenErr(t mqtt.Token) error {
	if err := t.Error(); err != nil {
		return err
	}
	return errors.New("timed out")
}
