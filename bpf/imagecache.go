package bpf

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/maphash"

	"github.com/kmodguard/kmodguard/kmod"
)

// Bounds of the enricher's image cache: the bytes of the images it holds
// copies of, the images, and the largest image it takes.
const (
	imageCacheBytes   = 4 << 20
	imageCacheEntries = 64
	imageCacheMax     = imageCacheBytes / 4
	// imageCacheSeen bounds the keys of images seen once.
	imageCacheSeen = 4096
)

// imageCache remembers what the enricher found in recent module images:
// their digests and their inspection. An image is found again only when
// all of its bytes equal those of one it holds, so an event judged from the
// cache is judged on its full content, exactly as if it had been hashed and
// parsed again. It spares that work for an image loaded again and again (a
// retry loop, a flood of one module) at the cost of a fast hash of a sample
// of the image and one comparison of all of it. An image is kept from its
// second sighting on. Memory is bounded (imageCacheBytes); the oldest entry
// goes first. It is not safe for
// concurrent use.
type imageCache struct {
	hash    maphash.Hash // seeded at random
	entries map[uint64]*imageEntry
	order   []uint64 // keys, oldest first
	bytes   int
	// seen holds the keys of images seen once: an image is kept from its
	// second sighting on, so that a stream of distinct images (a flood)
	// costs no copies.
	seen map[uint64]struct{}
}

// imageEntry is what an image gave: its digests, and its inspection (nil
// when it is no module: the digest is then the only answer).
type imageEntry struct {
	img            []byte // a copy
	elfOnly        bool   // inspected as init_module takes images
	sha256, elfSHA string
	mod            *kmod.Module
}

func newImageCache() *imageCache {
	return &imageCache{entries: make(map[uint64]*imageEntry), seen: make(map[uint64]struct{})}
}

// inspect returns the digests of img and, when it is a module, its
// inspection: from the cache when img is there, else computed and
// remembered. With elfOnly, as init_module takes images, only a plain ELF
// image is inspected; anything else is only hashed. img is not retained.
// The entry and its Module must not be modified.
func (c *imageCache) inspect(img []byte, elfOnly bool) *imageEntry {
	if len(img) > imageCacheMax {
		return inspectImage(img, elfOnly)
	}
	key := c.key(img, elfOnly)
	if e := c.entries[key]; e != nil && e.elfOnly == elfOnly && bytes.Equal(e.img, img) {
		return e
	}
	e := inspectImage(img, elfOnly)
	if _, taken := c.entries[key]; taken {
		return e // another image with the same key: keep the first
	}
	if _, again := c.seen[key]; !again {
		if len(c.seen) >= imageCacheSeen {
			clear(c.seen)
		}
		c.seen[key] = struct{}{}
		return e
	}
	delete(c.seen, key)
	for len(c.order) > 0 && (len(c.order) >= imageCacheEntries || c.bytes+len(img) > imageCacheBytes) {
		old := c.order[0]
		c.order = c.order[1:]
		c.bytes -= len(c.entries[old].img)
		delete(c.entries, old)
	}
	e.img = bytes.Clone(img)
	c.entries[key] = e
	c.order = append(c.order, key)
	c.bytes += len(img)
	return e
}

// keySample is how many bytes of each end, and of the middle, of an image
// go into its key.
const keySample = 256

// key is an image's place in the cache: a seeded hash of its length, its
// ends and its middle, which bytes.Equal then confirms. Two images of one
// key that differ elsewhere share the place; the second is not kept.
func (c *imageCache) key(img []byte, elfOnly bool) uint64 {
	h := &c.hash
	h.Reset()
	var n [9]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(img)))
	if elfOnly {
		n[8] = 1
	}
	h.Write(n[:])
	if len(img) <= 3*keySample {
		h.Write(img)
	} else {
		mid := len(img)/2 - keySample/2
		h.Write(img[:keySample])
		h.Write(img[mid : mid+keySample])
		h.Write(img[len(img)-keySample:])
	}
	return h.Sum64()
}

// inspectImage hashes and inspects img: a plain module or, unless elfOnly,
// a compressed one; anything else is only hashed.
func inspectImage(img []byte, elfOnly bool) *imageEntry {
	if !elfOnly || bytes.HasPrefix(img, []byte("\x7fELF")) {
		if m, err := kmod.InspectBytes(img); err == nil {
			return &imageEntry{elfOnly: elfOnly, sha256: m.FileSHA256, elfSHA: m.ELFSHA256, mod: m}
		}
	}
	sum := sha256.Sum256(img)
	return &imageEntry{elfOnly: elfOnly, sha256: hex.EncodeToString(sum[:])}
}
