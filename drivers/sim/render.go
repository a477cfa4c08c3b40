package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// noiseLen is the size of the table of normal samples the sensor noise is drawn from.
const noiseLen = 1 << 16

// Generator renders electroluminescence images of solar cells, one after the other,
// deterministically from Config.Seed. Each image is a fresh random cell (brightness,
// texture, busbars, fingers, vignetting, noise) with a defect drawn at
// Config.DefectRate. A Generator is not safe for concurrent use.
type Generator struct {
	w, h    int
	s       float64 // size scale against the 128-pixel reference cell
	rate    float64
	defects []string
	rng     *rand.Rand

	noise []float32 // standard normal samples
	light []float32 // w*h: 1 where the cell shines freely, lower under defects, 0 in cut corners
	tex   []float32 // coarse texture at half resolution, (w/2+2) x (h/2+2)
	tw    int
	rings []float32 // ring profile of a monocrystalline cell by quarter-pixel radius
	colF  []float32 // per column: cell edge and busbars
	rowF  []float32 // per row: cell edge and fingers
	vigX  []float32
	vigY  []float32
	sites []site // grain centres of a multicrystalline cell

	c cell
}

// cell is the geometry of the image being rendered; defects are placed against it.
type cell struct {
	x0, y0, x1, y1 float64 // the cell's bright area, pixel centres inclusive
	busX           [3]float64
	nBus           int
	busW           float64
	pitch, phase   float64 // fingers lie at y0 + phase + k*pitch
	mono           bool
}

type site struct {
	x, y, gain float32
}

// NewGenerator returns a generator for cfg, which must pass Validate.
func NewGenerator(cfg *Config) (*Generator, error) {
	if cfg == nil {
		return nil, errors.New("sim: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	w, h := cfg.Width, cfg.Height
	g := &Generator{
		w:       w,
		h:       h,
		s:       float64(min(w, h)) / 128,
		rate:    cfg.DefectRate,
		defects: append([]string(nil), cfg.Defects...),
		// The second PCG word is fixed so that the seed alone picks the sequence.
		rng:   rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5eed_e1ce11)),
		noise: make([]float32, noiseLen),
		light: make([]float32, w*h),
		tw:    w/2 + 2,
		tex:   make([]float32, (w/2+2)*(h/2+2)),
		rings: make([]float32, 4*(w/2+h/2+4)+1),
		colF:  make([]float32, w),
		rowF:  make([]float32, h),
		vigX:  make([]float32, w),
		vigY:  make([]float32, h),
	}
	// Grain sites sit on a jittered grid no finer than minGrain texture pixels.
	gx, gy := g.tw/minGrain+3, (h/2+2)/minGrain+3
	g.sites = make([]site, gx*gy)
	for i := range g.noise {
		g.noise[i] = float32(g.rng.NormFloat64())
	}
	return g, nil
}

// Size returns the image width and height; Next needs Width*Height bytes.
func (g *Generator) Size() (w, h int) { return g.w, g.h }

// Next renders the next image of the sequence into dst as gray8 (row-major, one byte
// per pixel) and returns its ground-truth label. It does not allocate. It panics when
// dst is shorter than Width*Height, as a slice index would.
func (g *Generator) Next(dst []byte) string {
	n := g.w * g.h
	if len(dst) < n {
		panic(fmt.Sprintf("sim: Next needs %d bytes, dst has %d", n, len(dst)))
	}
	label := LabelOK
	if len(g.defects) > 0 && g.rng.Float64() < g.rate {
		label = g.defects[g.rng.IntN(len(g.defects))]
	}
	g.layout()
	g.texture()
	for i := range g.light {
		g.light[i] = 1
	}
	if g.c.mono {
		g.chamfer()
	}
	switch label {
	case LabelCrack:
		g.crack()
	case LabelDarkSpot:
		g.darkSpot()
	case LabelBrokenFinger:
		g.brokenFinger()
	}
	g.compose(dst[:n])
	return label
}

// uniform returns a float in [lo, hi).
func (g *Generator) uniform(lo, hi float64) float64 { return lo + (hi-lo)*g.rng.Float64() }

// layout draws the cell's geometry and fills the separable per-row and per-column
// factors: cell edges, busbars, fingers and vignetting.
func (g *Generator) layout() {
	c := &g.c
	m := func() float64 { return g.uniform(-0.5, 3.5*g.s) }
	c.x0, c.x1 = m(), float64(g.w-1)-m()
	c.y0, c.y1 = m(), float64(g.h-1)-m()
	c.mono = g.rng.IntN(2) == 0

	c.nBus = 2 + g.rng.IntN(2)
	c.busW = g.uniform(1.6, 3.2) * g.s
	cw := c.x1 - c.x0
	for i := 0; i < c.nBus; i++ {
		c.busX[i] = c.x0 + cw*(float64(i)+0.5)/float64(c.nBus) + g.uniform(-1, 1)*g.s
	}
	busDark := float32(g.uniform(0.12, 0.4))
	c.pitch = g.uniform(3.4, 5.2) * g.s
	c.phase = g.uniform(0, c.pitch)
	fingDark := float32(g.uniform(0.08, 0.22))

	for x := range g.colF {
		fx := float64(x)
		f := float32(edge(fx, c.x0, c.x1))
		for i := 0; i < c.nBus; i++ {
			cov := clamp01(c.busW/2 + 0.5 - math.Abs(fx-c.busX[i]))
			f *= 1 - (1-busDark)*float32(cov)
		}
		g.colF[x] = f
	}
	for y := range g.rowF {
		fy := float64(y)
		f := float32(edge(fy, c.y0, c.y1))
		// Distance to the nearest finger centre; fingers are about one pixel wide.
		d := math.Mod(fy-c.y0-c.phase, c.pitch)
		if d < 0 {
			d += c.pitch
		}
		d = math.Min(d, c.pitch-d)
		f *= 1 - fingDark*float32(clamp01(1-d/0.8))
		g.rowF[y] = f
	}

	k := g.uniform(0, 0.3)
	cx := (c.x0+c.x1)/2 + g.uniform(-0.1, 0.1)*cw
	cy := (c.y0+c.y1)/2 + g.uniform(-0.1, 0.1)*(c.y1-c.y0)
	r2 := (cw*cw + (c.y1-c.y0)*(c.y1-c.y0)) / 4
	for x := range g.vigX {
		d := float64(x) - cx
		g.vigX[x] = float32(k * d * d / r2)
	}
	for y := range g.vigY {
		d := float64(y) - cy
		g.vigY[y] = float32(k * d * d / r2)
	}
}

// edge is the coverage of pixel p by the interval [lo, hi], antialiased over one pixel.
func edge(p, lo, hi float64) float64 {
	return clamp01(p-lo+0.5) * clamp01(hi-p+0.5)
}

func clamp01(v float64) float64 { return max(0, min(1, v)) }

// minGrain is the smallest grain spacing, in texture (half-resolution) pixels.
const minGrain = 5

// texture fills the coarse brightness map: smooth swirl rings for a monocrystalline
// cell, grains with dark boundaries for a multicrystalline one. Both give the model
// dark structure that is not a defect.
func (g *Generator) texture() {
	th := len(g.tex) / g.tw
	if g.c.mono {
		// Low-frequency unevenness plus the concentric rings a Czochralski ingot leaves,
		// the rings read from a table by quarter-pixel radius.
		a := g.uniform(0.01, 0.06)
		fr := g.uniform(0.15, 0.5) // radians per texture pixel of radius
		ph := g.uniform(0, 2*math.Pi)
		for k := range g.rings {
			g.rings[k] = float32(a * math.Sin(float64(k)/4*fr+ph))
		}
		cx, cy := float32(g.tw)/2, float32(th)/2
		var grid [4][4]float32
		for i := range grid {
			for j := range grid[i] {
				grid[i][j] = float32(g.uniform(-0.06, 0.06))
			}
		}
		for y := 0; y < th; y++ {
			gy := float32(y) * 3 / float32(th)
			iy := min(int(gy), 2)
			fy := gy - float32(iy)
			dy := float32(y) - cy
			for x := 0; x < g.tw; x++ {
				gx := float32(x) * 3 / float32(g.tw)
				ix := min(int(gx), 2)
				fx := gx - float32(ix)
				t0 := grid[iy][ix] + (grid[iy][ix+1]-grid[iy][ix])*fx
				t1 := grid[iy+1][ix] + (grid[iy+1][ix+1]-grid[iy+1][ix])*fx
				dx := float32(x) - cx
				ring := g.rings[int(4*sqrt32(dx*dx+dy*dy))]
				g.tex[y*g.tw+x] = 1 + t0 + (t1-t0)*fy + ring
			}
		}
		return
	}

	// Multicrystalline: a Voronoi diagram of jittered grid sites. Each grain has its own
	// gain; pixels near a boundary (second-nearest site almost as near) are darker.
	gs := g.uniform(minGrain, 2*minGrain+2)
	gx := int(float64(g.tw)/gs) + 2
	gy := int(float64(th)/gs) + 2
	spread := float32(g.uniform(0.04, 0.12))
	for j := 0; j < gy; j++ {
		for i := 0; i < gx; i++ {
			g.sites[j*gx+i] = site{
				x:    float32((float64(i) + g.rng.Float64()) * gs),
				y:    float32((float64(j) + g.rng.Float64()) * gs),
				gain: 1 + spread*float32(g.rng.Float64()*2-1),
			}
		}
	}
	bdark := float32(g.uniform(0.04, 0.14))
	bw := float32(g.uniform(0.5, 1.1))
	igs := 1 / float32(gs)
	for y := 0; y < th; y++ {
		fy := float32(y)
		cj := int(fy * igs)
		for x := 0; x < g.tw; x++ {
			fx := float32(x)
			ci := int(fx * igs)
			d1, d2 := float32(math.MaxFloat32), float32(math.MaxFloat32)
			gain := float32(1)
			for j := max(cj-1, 0); j <= min(cj+1, gy-1); j++ {
				for i := max(ci-1, 0); i <= min(ci+1, gx-1); i++ {
					s := &g.sites[j*gx+i]
					dx, dy := s.x-fx, s.y-fy
					d := dx*dx + dy*dy
					// Branch-free where the compiler can: which site is nearest is
					// unpredictable, and mispredictions dominated this loop.
					if d < d1 {
						gain = s.gain
					}
					d2 = min(d2, max(d, d1))
					d1 = min(d1, d)
				}
			}
			// Half the gap between the two nearest sites' distances approximates the
			// distance to the boundary between them.
			gap := (sqrt32(d2) - sqrt32(d1)) / 2
			b := float32(0)
			if gap < bw {
				b = bdark * (1 - gap/bw)
			}
			g.tex[y*g.tw+x] = gain - b
		}
	}
}

func sqrt32(v float32) float32 { return float32(math.Sqrt(float64(v))) }

// chamfer cuts the four corners of a pseudo-square monocrystalline wafer.
func (g *Generator) chamfer() {
	c := &g.c
	size := g.uniform(0.06, 0.13) * (c.x1 - c.x0)
	// Margins are at most 3.5*s, so this box holds every cut pixel of each corner.
	n := min(int(size+4*g.s)+2, g.w/2, g.h/2)
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			fx, fy := float64(x), float64(y)
			// Coverage of each corner's cut, by signed distance to its 45° edge.
			g.cut(x, y, (fx-c.x0)+(fy-c.y0), size)
			g.cut(g.w-1-x, y, (c.x1-float64(g.w-1-x))+(fy-c.y0), size)
			g.cut(x, g.h-1-y, (fx-c.x0)+(c.y1-float64(g.h-1-y)), size)
			g.cut(g.w-1-x, g.h-1-y, (c.x1-float64(g.w-1-x))+(c.y1-float64(g.h-1-y)), size)
		}
	}
}

func (g *Generator) cut(x, y int, d, size float64) {
	cov := float32(clamp01((d-size)/math.Sqrt2 + 0.5))
	i := y*g.w + x
	g.light[i] = min(g.light[i], cov)
}

// darken lowers the light at (x, y) to 1-depth unless it is already darker; defects
// overlapping themselves must not compound.
func (g *Generator) darken(x, y int, depth float32) {
	i := y*g.w + x
	g.light[i] = min(g.light[i], 1-depth)
}

// disc stamps an antialiased dark disc of radius r.
func (g *Generator) disc(cx, cy, r float64, depth float32) {
	x0, x1 := max(int(cx-r-1), 0), min(int(cx+r+2), g.w-1)
	y0, y1 := max(int(cy-r-1), 0), min(int(cy+r+2), g.h-1)
	for y := y0; y <= y1; y++ {
		for x := x0; x <= x1; x++ {
			d := math.Hypot(float64(x)-cx, float64(y)-cy)
			if cov := clamp01(r + 0.5 - d); cov > 0 {
				g.darken(x, y, depth*float32(cov))
			}
		}
	}
}

// inside reports whether (x, y) lies on the cell's bright area.
func (g *Generator) inside(x, y float64) bool {
	c := &g.c
	return x >= c.x0 && x <= c.x1 && y >= c.y0 && y <= c.y1
}

// crack draws a thin jagged dark line, sometimes with a branch.
func (g *Generator) crack() {
	c := &g.c
	x := g.uniform(c.x0+0.15*(c.x1-c.x0), c.x1-0.15*(c.x1-c.x0))
	y := g.uniform(c.y0+0.15*(c.y1-c.y0), c.y1-0.15*(c.y1-c.y0))
	theta := g.uniform(0, 2*math.Pi)
	length := g.uniform(0.25, 0.8) * (c.x1 - c.x0)
	r := g.uniform(0.45, 1.1) * g.s
	depth := g.uniform(0.45, 0.85)
	bx, by, btheta := g.crackPath(x, y, theta, length, r, depth)
	if g.rng.Float64() < 0.4 {
		turn := g.uniform(0.4, 1.2)
		if g.rng.IntN(2) == 0 {
			turn = -turn
		}
		g.crackPath(bx, by, btheta+turn, length*g.uniform(0.3, 0.6), r*0.8, depth*g.uniform(0.7, 1))
	}
}

// crackPath walks a jagged path from (x, y) and stamps it; it returns a point and
// heading part way along, where a branch may leave.
func (g *Generator) crackPath(x, y, theta, length, r, depth float64) (bx, by, btheta float64) {
	const step = 0.7
	branchAt := g.uniform(0.2, 0.7) * length
	bx, by, btheta = x, y, theta
	dep := depth
	for walked := 0.0; walked < length; walked += step {
		if !g.inside(x, y) {
			break
		}
		g.disc(x, y, r, float32(dep))
		if walked <= branchAt {
			bx, by, btheta = x, y, theta
		}
		// A slow wander with the odd sharp kink keeps it from looking like a scratch.
		theta += g.uniform(-0.18, 0.18)
		if g.rng.Float64() < 0.05 {
			theta += g.uniform(-0.7, 0.7)
		}
		dep = min(1, max(depth*0.6, dep+g.uniform(-0.05, 0.05)))
		x += step * math.Cos(theta)
		y += step * math.Sin(theta)
	}
	return bx, by, btheta
}

// darkSpot draws a soft, slightly elliptical dark blob.
func (g *Generator) darkSpot() {
	c := &g.c
	sx := g.uniform(2.2, 7) * g.s
	sy := sx * g.uniform(0.65, 1.5)
	x := g.uniform(c.x0+sx, c.x1-sx)
	y := g.uniform(c.y0+sy, c.y1-sy)
	depth := float32(g.uniform(0.35, 0.75))
	ax, ay := 1/(2*sx*sx), 1/(2*sy*sy)
	x0, x1 := max(int(x-3*sx), 0), min(int(x+3*sx)+1, g.w-1)
	y0, y1 := max(int(y-3*sy), 0), min(int(y+3*sy)+1, g.h-1)
	for py := y0; py <= y1; py++ {
		dy := float64(py) - y
		for px := x0; px <= x1; px++ {
			dx := float64(px) - x
			g.darken(px, py, depth*float32(math.Exp(-dx*dx*ax-dy*dy*ay)))
		}
	}
}

// brokenFinger darkens a strip around one or two fingers between busbars (or between a
// busbar and the cell edge): past an interruption the finger collects no current, so
// the strip it serves stays dark, darkest far from where it is still fed.
func (g *Generator) brokenFinger() {
	c := &g.c
	seg := g.rng.IntN(c.nBus + 1)
	lo, hi := c.x0, c.x1
	if seg > 0 {
		lo = c.busX[seg-1] + c.busW/2
	}
	if seg < c.nBus {
		hi = c.busX[seg] - c.busW/2
	}
	span := hi - lo
	length := g.uniform(0.4, 1) * span
	a := lo + g.uniform(0, span-length)
	b := a + length
	height := g.uniform(1.2, 2.4) * c.pitch
	fingers := int((c.y1 - c.y0 - c.phase) / c.pitch)
	fy := c.y0 + c.phase + float64(g.rng.IntN(max(fingers, 1)))*c.pitch
	y0, y1 := fy-height/2, fy+height/2
	depth := g.uniform(0.4, 0.75)
	// Dark end: the side farther from the feeding busbar.
	fromA := g.rng.IntN(2) == 0
	for py := max(int(y0)-1, 0); py <= min(int(y1)+2, g.h-1); py++ {
		cy := edge(float64(py), y0, y1)
		if cy == 0 {
			continue
		}
		for px := max(int(a)-1, 0); px <= min(int(b)+2, g.w-1); px++ {
			cx := edge(float64(px), a, b)
			if cx == 0 {
				continue
			}
			t := (float64(px) - a) / length
			if !fromA {
				t = 1 - t
			}
			d := depth * (0.65 + 0.35*clamp01(t)) * cx * cy
			g.darken(px, py, float32(d))
		}
	}
}

// compose turns the factors into gray levels with sensor noise.
func (g *Generator) compose(dst []byte) {
	bright := float32(g.uniform(110, 215))
	bg := float32(g.uniform(4, 28))
	sigma := float32(g.uniform(1.5, 6))
	amp := bright - bg
	tw := g.tw
	for y := 0; y < g.h; y++ {
		ty := y >> 1
		fy := float32(y&1) * 0.5
		r0 := g.tex[ty*tw : ty*tw+tw]
		r1 := g.tex[(ty+1)*tw : (ty+1)*tw+tw]
		rf := g.rowF[y] * amp
		vy := 1 - g.vigY[y]
		row := g.light[y*g.w : y*g.w+g.w]
		out := dst[y*g.w : y*g.w+g.w]
		colF := g.colF[:len(row)]
		vigX := g.vigX[:len(row)]
		// Each row reads its own random stretch of the table; reading it in order keeps
		// the table in cache, which a random pixel order did not.
		off := g.rng.IntN(noiseLen - g.w)
		noise := g.noise[off : off+g.w]
		for x := range row {
			tx := x >> 1
			fx := float32(x&1) * 0.5
			t0 := r0[tx] + (r0[tx+1]-r0[tx])*fx
			t1 := r1[tx] + (r1[tx+1]-r1[tx])*fx
			t := t0 + (t1-t0)*fy
			v := bg + rf*colF[x]*t*(vy-vigX[x])*row[x] +
				sigma*noise[x]
			out[x] = gray(v)
		}
	}
}

func gray(v float32) byte {
	switch {
	case v <= 0:
		return 0
	case v >= 255:
		return 255
	}
	return byte(v + 0.5)
}
