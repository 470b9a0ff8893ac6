package bpf

import (
	"bytes"
	"compress/gzip"
	"os"
	"testing"

	"github.com/kmodguard/kmodguard/internal/elftest"
	"github.com/kmodguard/kmodguard/kmod"
)

func TestImageCache(t *testing.T) {
	c := newImageCache()
	img := elftest.Header(make([]byte, 4096))
	first := c.inspect(img, true)
	if first.sha256 != sha(img) || first.mod != nil || first.elfSHA != "" {
		t.Fatalf("not a module: %+v", first)
	}
	if len(c.entries) != 0 {
		t.Errorf("an image seen once was kept")
	}
	// Kept from its second sighting, found again from its third.
	second := c.inspect(bytes.Clone(img), true)
	if again := c.inspect(bytes.Clone(img), true); again != second || second.sha256 != first.sha256 {
		t.Errorf("equal bytes were not found again")
	}
	// One byte changed, anywhere, is another image: the cache keeps none
	// of the caller's bytes, and compares all of them.
	for _, off := range []int{0, 2048, len(img) - 1} {
		img[off] ^= 1
		if e := c.inspect(img, true); e.sha256 != sha(img) || e == second {
			t.Errorf("byte %d changed: digest %s, want %s", off, e.sha256, sha(img))
		}
		img[off] ^= 1
	}
	// The cache holds a copy: a caller that reuses its buffer (the
	// joiner does) changes nothing in it.
	buf := bytes.Clone(img)
	c.inspect(buf, true)
	for i := range buf {
		buf[i] = 0xa5
	}
	if e := c.inspect(bytes.Clone(img), true); e.sha256 != sha(img) {
		t.Errorf("a reused buffer changed the cache: digest %s, want %s", e.sha256, sha(img))
	}
	if e := c.inspect(buf, true); e.sha256 != sha(buf) {
		t.Errorf("the reused buffer's new content: digest %s, want %s", e.sha256, sha(buf))
	}
	// A longer image with the same start is another image too.
	if e := c.inspect(append(bytes.Clone(img), 0), true); e.sha256 == first.sha256 {
		t.Error("a longer image got the shorter one's digest")
	}

	// Bounds: entries, bytes, and the largest image taken.
	for i := range 2 * imageCacheEntries {
		b := make([]byte, 100)
		b[0], b[1] = byte(i), byte(i>>8)
		c.inspect(b, false)
		c.inspect(b, false)
	}
	if len(c.entries) != imageCacheEntries || len(c.order) != len(c.entries) {
		t.Errorf("%d entries (%d in order), bound %d", len(c.entries), len(c.order), imageCacheEntries)
	}
	for i := range 8 {
		b := make([]byte, imageCacheMax)
		b[0] = byte(i)
		c.inspect(b, false)
		c.inspect(b, false)
	}
	if c.bytes > imageCacheBytes || len(c.entries) == 0 {
		t.Errorf("%d bytes held, bound %d", c.bytes, imageCacheBytes)
	}
	big := make([]byte, imageCacheMax+1)
	for range 2 {
		if e := c.inspect(big, false); e.sha256 != sha(big) || e.img != nil {
			t.Errorf("an image over the bound: %+v", e.sha256)
		}
	}
	// A stream of distinct images is never copied.
	c = newImageCache()
	for i := range 3 * imageCacheSeen {
		b := make([]byte, 100)
		b[0], b[1] = byte(i), byte(i>>8)
		c.inspect(b, false)
	}
	if len(c.entries) != 0 || len(c.seen) > imageCacheSeen {
		t.Errorf("distinct images: %d kept, %d keys seen", len(c.entries), len(c.seen))
	}
}

// TestImageCacheModule checks that a module's inspection comes back whole
// from the cache, and that init_module's rule (a compressed image is only
// hashed) and finit_module's (it is inspected) each hold for the same bytes.
func TestImageCacheModule(t *testing.T) {
	raw, err := os.ReadFile(dummyModule(t))
	if err != nil {
		t.Fatal(err)
	}
	want, err := kmod.InspectBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := newImageCache()
	for range 2 {
		e := c.inspect(raw, true)
		if e.mod == nil || e.mod.Name != want.Name || e.sha256 != want.FileSHA256 || e.elfSHA != want.ELFSHA256 {
			t.Fatalf("dummy.ko: %+v", e)
		}
	}
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(raw)
	w.Close()
	for range 2 {
		if e := c.inspect(gz.Bytes(), true); e.mod != nil || e.sha256 != sha(gz.Bytes()) || e.elfSHA != "" {
			t.Errorf("init_module of a gzip image: mod %v, sha %s elf %q", e.mod != nil, e.sha256, e.elfSHA)
		}
		if e := c.inspect(gz.Bytes(), false); e.mod == nil || e.sha256 != sha(gz.Bytes()) || e.elfSHA != want.ELFSHA256 {
			t.Errorf("finit_module of a gzip file: mod %v, sha %s elf %q", e.mod != nil, e.sha256, e.elfSHA)
		}
	}
}
