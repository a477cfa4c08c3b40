package imagedir

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestConformance(t *testing.T) {
	var dir string
	var n atomic.Int64
	img := pngImage(t, 16, 16, 99)
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			dir = filepath.Join(t.TempDir(), "cam")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			return drivertest.Build(t, "imagedir", drivers.Spec{Name: "aoi-conf", Budget: 2 * time.Second}, fmt.Sprintf("dir: %s\nsettle: 50ms\n", dir))
		},
		Trigger: func(t testing.TB) {
			dropFile(t, dir, fmt.Sprintf("img%04d.png", n.Add(1)), img)
		},
		Stop: func(t testing.TB) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		},
		Start: func(t testing.TB) {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		},
	})
}
