package httpupload

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestConformance(t *testing.T) {
	var cur atomic.Pointer[Driver]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(w, r) }))
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	img := pngImage(t, 8, 8)
	// Uploads run on their own goroutines: with a blocked pipeline the request lasts
	// until Run ends, after the trigger has returned.
	var uploads sync.WaitGroup
	defer uploads.Wait()
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			uploads.Wait()
			f, err := drivers.Lookup("httpupload")
			if err != nil {
				t.Fatal(err)
			}
			cfg := f.NewConfig()
			if err := yaml.Unmarshal([]byte("max_batch: 4\nmax_bytes: 1MiB\n"), cfg); err != nil {
				t.Fatal(err)
			}
			d, err := f.New(drivers.Spec{Name: "rig-conf", Budget: 2 * time.Second}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			cur.Store(d.(*Driver))
			return d
		},
		Trigger: func(t testing.TB) {
			uploads.Add(1)
			go func() {
				defer uploads.Done()
				resp, err := c.Post(srv.URL, "image/png", bytes.NewReader(img))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		},
	})
}
