package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers/sim"
)

// simPNG renders one simulator cell as a PNG and returns it with its label.
func simPNG(t *testing.T, seed int64, defect bool) ([]byte, string) {
	t.Helper()
	c := sim.DefaultConfig()
	c.Seed = seed
	c.DefectRate = 0
	if defect {
		c.DefectRate = 1
	}
	g, err := sim.NewGenerator(c)
	if err != nil {
		t.Fatal(err)
	}
	w, h := g.Size()
	img := image.NewGray(image.Rect(0, 0, w, h))
	truth := g.Next(img.Pix)
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), truth
}

// TestUploadAndImageDrop runs edged with the two image sources a camera without a
// simulator uses: uploads answered with their verdict, and a folder the camera drops
// files into. Both go through the real model and reach MQTT with their part ids.
func TestUploadAndImageDrop(t *testing.T) {
	dir := t.TempDir()
	drop := filepath.Join(dir, "drop")
	if err := os.Mkdir(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	l := &testLine{site: "s1", line: "l1", node: "n1", httpAddr: freeAddr(t), modelsDir: filepath.Join(dir, "models")}
	embedded := freeAddr(t)
	l.brokerURL = "tcp://" + embedded
	const token = "0123456789abcdef-admin"
	cfg := fmt.Sprintf(`node: {site: s1, line: l1, name: n1}
log: {level: info, format: json}
http: {listen: "%s", admin_token: "%s"}
mqtt: {broker: embedded, embedded_listen: "%s", spool: {dir: "%s"}}
models: {dir: "%s"}
sources:
  - name: bench
    type: httpupload
    verdict_budget: 5s
  - name: aoi
    type: imagedir
    verdict_budget: 5s
    imagedir: {dir: "%s", settle: 50ms}
inspections:
  - {name: bench-el, source: bench, model: el-defect}
  - {name: aoi-el, source: aoi, model: el-defect}
`, l.httpAddr, token, embedded, filepath.Join(dir, "spool"), l.modelsDir, drop)
	l.config = filepath.Join(dir, "edged.yaml")
	if err := os.WriteFile(l.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	sub := subscribe(t, l.brokerURL, l)

	url := "http://" + l.httpAddr + "/v1/sources/bench/upload"
	body, truth := simPNG(t, 7, true)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	post := func(tok string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, url+"?wait=1&part_id=P-100", bytes.NewReader(body))
		req.Header.Set("Content-Type", "image/png")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	unauth := post("")
	unauth.Body.Close()
	if unauth.StatusCode != http.StatusUnauthorized {
		t.Errorf("upload without the admin token: %s, want 401", unauth.Status)
	}
	resp := post(token)
	defer resp.Body.Close()
	var got struct {
		TraceID  string `json:"trace_id"`
		Verdicts []struct {
			Inspection string `json:"inspection"`
			Verdict    string `json:"verdict"`
			Label      string `json:"label"`
			PartID     string `json:"part_id"`
		} `json:"verdicts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || len(got.Verdicts) != 1 {
		t.Fatalf("upload with wait: %s %+v", resp.Status, got)
	}
	if v := got.Verdicts[0]; v.Inspection != "bench-el" || v.Verdict != "NG" || v.Label != truth || v.PartID != "P-100" {
		t.Errorf("verdict %+v, want bench-el NG %s for part P-100", v, truth)
	}

	// A camera drops a good cell.
	okPNG, _ := simPNG(t, 8, false)
	tmp := filepath.Join(drop, ".P-200.png.tmp")
	if err := os.WriteFile(tmp, okPNG, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(drop, "P-200.png")); err != nil {
		t.Fatal(err)
	}
	sub.waitFor(t, 2, 30*time.Second)
	byIns := map[string]map[string]any{}
	sub.mu.Lock()
	for _, r := range sub.results {
		byIns[r["inspection"].(string)] = r
	}
	sub.mu.Unlock()
	if r := byIns["bench-el"]; r == nil || r["part_id"] != "P-100" || r["trace_id"] != got.TraceID {
		t.Errorf("upload's result on MQTT: %v, want part P-100, trace %s", r, got.TraceID)
	}
	if r := byIns["aoi-el"]; r == nil || r["part_id"] != "P-200" || r["verdict"] != "OK" {
		t.Errorf("dropped file's result on MQTT: %v, want part P-200 OK", r)
	}
	waitFile(t, filepath.Join(drop, "done", "P-200.png"))
	if code := p.stop(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 10s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
