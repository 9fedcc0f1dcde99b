package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"slices"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Series is one line of a panel.
type Series struct {
	Name string
	X, Y []float64
}

// Panel is one chart: lines over a logarithmic x axis, and a linear or
// logarithmic y axis.
type Panel struct {
	Title, XLabel, YLabel string
	LogY                  bool
	// YMin and YMax fix the y range when YMax > YMin; otherwise it fits
	// the data.
	YMin, YMax float64
	// YPercent prints y ticks as percentages of 1.
	YPercent bool
	Series   []Series
}

var (
	white   = color.RGBA{255, 255, 255, 255}
	black   = color.RGBA{0, 0, 0, 255}
	grey    = color.RGBA{210, 210, 210, 255}
	palette = []color.RGBA{{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {148, 103, 189, 255}}
)

// WritePNG draws the panels side by side, each 480 × 360 pixels, and
// encodes the image as PNG.
func WritePNG(w io.Writer, panels []Panel) error {
	const pw, ph = 480, 360
	img := image.NewRGBA(image.Rect(0, 0, pw*len(panels), ph))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	for i, p := range panels {
		if err := p.draw(img, image.Rect(i*pw, 0, (i+1)*pw, ph)); err != nil {
			return err
		}
	}
	return png.Encode(w, img)
}

func (p Panel) draw(img *image.RGBA, r image.Rectangle) error {
	plot := image.Rect(r.Min.X+70, r.Min.Y+40, r.Max.X-20, r.Max.Y-70)
	var xs, ys []float64
	for _, s := range p.Series {
		if len(s.X) != len(s.Y) || len(s.X) == 0 {
			return fmt.Errorf("bench: series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		xs = append(xs, s.X...)
		ys = append(ys, s.Y...)
	}
	xlo, xhi := math.Log10(slices.Min(xs)), math.Log10(slices.Max(xs))
	if xhi == xlo {
		xlo, xhi = xlo-0.5, xhi+0.5
	}
	ylo, yhi := slices.Min(ys), slices.Max(ys)
	if p.YMax > p.YMin {
		ylo, yhi = p.YMin, p.YMax
	}
	fy := func(v float64) float64 { return v }
	if p.LogY {
		fy = func(v float64) float64 { return math.Log10(max(v, 1)) }
		ylo, yhi = math.Floor(fy(max(ylo, 1))), math.Ceil(fy(yhi))
	}
	if yhi == ylo {
		yhi = ylo + 1
	}
	px := func(x float64) int {
		return plot.Min.X + int(float64(plot.Dx())*(math.Log10(x)-xlo)/(xhi-xlo))
	}
	py := func(y float64) int {
		return plot.Max.Y - int(float64(plot.Dy())*(fy(y)-ylo)/(yhi-ylo))
	}

	// Grid and tick labels.
	for e := math.Ceil(xlo); e <= xhi; e++ {
		x := px(math.Pow(10, e))
		vline(img, x, plot.Min.Y, plot.Max.Y, grey)
		label(img, x-12, plot.Max.Y+16, humanCount(math.Pow(10, e)), black)
	}
	yticks := linearTicks(ylo, yhi)
	if p.LogY {
		yticks = nil
		for e := ylo; e <= yhi; e++ {
			yticks = append(yticks, math.Pow(10, e))
		}
	}
	for _, v := range yticks {
		y := py(v)
		hline(img, plot.Min.X, plot.Max.X, y, grey)
		text := humanCount(v)
		if p.YPercent {
			text = strconv.FormatFloat(math.Round(100*v), 'f', -1, 64) + "%"
		}
		label(img, r.Min.X+8, y+4, text, black)
	}
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, black)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, black)
	label(img, plot.Min.X, r.Min.Y+20, p.Title, black)
	label(img, plot.Min.X+plot.Dx()/2-3*len(p.XLabel), plot.Max.Y+34, p.XLabel, black)
	label(img, r.Min.X+8, r.Min.Y+34, p.YLabel, black)

	// Lines, markers and the legend.
	for i, s := range p.Series {
		c := palette[i%len(palette)]
		for k := range s.X {
			x, y := px(s.X[k]), py(s.Y[k])
			fill(img, image.Rect(x-3, y-3, x+4, y+4), c)
			if k > 0 {
				line(img, px(s.X[k-1]), py(s.Y[k-1]), x, y, c)
			}
		}
		ly := plot.Max.Y + 52
		lx := plot.Min.X + i*130
		fill(img, image.Rect(lx, ly-8, lx+14, ly-2), c)
		label(img, lx+18, ly, s.Name, black)
	}
	return nil
}

// linearTicks returns about five round values from lo to hi.
func linearTicks(lo, hi float64) []float64 {
	step := math.Pow(10, math.Floor(math.Log10((hi-lo)/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if (hi-lo)/(step*m) <= 6 {
			step *= m
			break
		}
	}
	var ts []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step/1000; v += step {
		ts = append(ts, math.Round(v/step)*step)
	}
	return ts
}

// humanCount prints 1000 as 1k and 1000000 as 1M.
func humanCount(v float64) string {
	switch {
	case v >= 1e6 && math.Mod(v, 1e6) == 0:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3 && math.Mod(v, 1e3) == 0:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func label(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, &image.Uniform{c}, image.Point{}, draw.Src)
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

// line draws a two-pixel-wide segment (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		img.Set(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}
