// Package chromiumtest takes screenshots of pages in a real headless Chromium for tests
// (Debian's chromium package). Find installs it when it is missing and the test runs as root
// (or with sudo) on a machine with apt-get; elsewhere the test is skipped, saying why, except
// in CI ($CI set), which must have it.
package chromiumtest

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fallbackBinary is where Debian's package installs it.
const fallbackBinary = "/usr/bin/chromium"

var (
	installOnce sync.Once
	installErr  error
	installLog  []byte
)

// Find returns the path of the chromium binary, installing Debian's package once per test
// binary when it is missing and it can be installed. Without it the test is skipped (failed
// in CI).
func Find(t testing.TB) string {
	t.Helper()
	if path, ok := lookup(); ok {
		return path
	}
	installOnce.Do(func() { installLog, installErr = install() })
	if path, ok := lookup(); ok {
		return path
	}
	msg := "skipping: no chromium binary (in PATH or " + fallbackBinary + ") and it cannot be installed here: " +
		"run `apt-get install -y chromium` (Debian)"
	if installErr != nil {
		msg += ": " + installErr.Error() + "\n" + tail(installLog)
	}
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func lookup() (string, bool) {
	for _, name := range []string{"chromium", fallbackBinary} {
		if path, err := exec.LookPath(name); err == nil {
			return path, true
		}
	}
	return "", false
}

// install runs apt-get install -y chromium, as root or through sudo, after apt-get update
// when the first attempt fails (a machine with no package lists yet).
func install() ([]byte, error) {
	aptGet, err := exec.LookPath("apt-get")
	if err != nil {
		return nil, err
	}
	var prefix []string
	if os.Geteuid() != 0 {
		sudo, err := exec.LookPath("sudo")
		if err != nil {
			return nil, err
		}
		// Non-interactive: never wait for a password.
		prefix = []string{sudo, "-n"}
	}
	var out bytes.Buffer
	run := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		argv := append(append(append([]string{}, prefix...), aptGet), args...)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.Run()
	}
	if err := run("install", "-y", "-qq", "--no-install-recommends", "chromium"); err != nil {
		if err := run("update", "-qq"); err != nil {
			return out.Bytes(), err
		}
		if err := run("install", "-y", "-qq", "--no-install-recommends", "chromium"); err != nil {
			return out.Bytes(), err
		}
	}
	return out.Bytes(), nil
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Screenshot loads url in a headless Chromium with a window of width x height CSS pixels
// (at scale 1) and returns the screenshot of that window. With $ANALYZERD_KEEP_SCREENSHOTS
// set to a directory, the screenshot is also kept there as name.png.
func Screenshot(t testing.TB, name, url string, width, height int) image.Image {
	t.Helper()
	binary := Find(t)
	dir := t.TempDir()
	shot := filepath.Join(dir, "screenshot.png")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
		"--no-first-run", "--disable-extensions", "--force-device-scale-factor=1",
		"--user-data-dir="+filepath.Join(dir, "profile"),
		"--window-size="+strconv.Itoa(width)+","+strconv.Itoa(height),
		"--screenshot="+shot, url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, tail(out))
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot of %s: %v\n%s", url, err, tail(out))
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decoding the screenshot of %s: %v", url, err)
	}
	if os.Getenv("ANALYZERD_KEEP_SCREENSHOTS") != "" {
		keep := filepath.Join(os.Getenv("ANALYZERD_KEEP_SCREENSHOTS"), name+".png")
		if b, err := os.ReadFile(shot); err == nil {
			_ = os.WriteFile(keep, b, 0o644)
			t.Logf("screenshot kept in %s", keep)
		}
	}
	return img
}

// Colour is an RGB colour, as the pages write it (#rrggbb).
type Colour struct{ R, G, B uint8 }

// Hex reads "#rrggbb".
func Hex(s string) Colour {
	v, err := strconv.ParseUint(s[1:], 16, 32)
	if err != nil || len(s) != 7 {
		panic("chromiumtest: not #rrggbb: " + s)
	}
	return Colour{uint8(v >> 16), uint8(v >> 8), uint8(v)}
}

// Pixels returns the points of img whose colour is within tolerance of c in each channel.
func Pixels(img image.Image, c Colour, tolerance int) []image.Point {
	var out []image.Point
	b := img.Bounds()
	near := func(a uint32, want uint8) bool {
		d := int(a>>8) - int(want)
		return d >= -tolerance && d <= tolerance
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near(r, c.R) && near(g, c.G) && near(bl, c.B) {
				out = append(out, image.Point{X: x, Y: y})
			}
		}
	}
	return out
}
