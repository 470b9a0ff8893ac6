package event

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// A record file holds events as `kmodguard watch --record` wrote them, for
// replay through the Falco plugin (open params "replay:FILE") or for tests:
//
//	file   = magic record*
//	magic  = "KMODGREC" version(1 byte)
//	record = length(uvarint) event(length bytes) crc32c(event, 4 bytes little endian)
//
// event is the binary form of MarshalBinary. The checksum makes a torn or
// damaged file fail loudly at the first bad record instead of yielding a
// wrong event. A header may also appear between records: recordings joined
// end to end are one recording.

// RecordMagic starts every record file; RecordVersion follows it.
const (
	RecordMagic   = "KMODGREC"
	RecordVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RecordWriter writes events to a record file. It writes the file header
// before the first event, and each event with one Write call on the
// underlying writer, so an *os.File is never left with half a record by a
// clean exit.
type RecordWriter struct {
	w           io.Writer
	wroteHeader bool
	buf         []byte
}

// NewRecordWriter returns a writer that appends a record file to w.
func NewRecordWriter(w io.Writer) *RecordWriter { return &RecordWriter{w: w} }

// WriteHeader writes the file header if it has not been written yet. Write
// calls it; call it yourself to make an empty recording a valid file.
func (rw *RecordWriter) WriteHeader() error {
	if rw.wroteHeader {
		return nil
	}
	if _, err := rw.w.Write(append([]byte(RecordMagic), RecordVersion)); err != nil {
		return fmt.Errorf("write record header: %w", err)
	}
	rw.wroteHeader = true
	return nil
}

// Write appends one event.
func (rw *RecordWriter) Write(e *Event) error {
	if err := rw.WriteHeader(); err != nil {
		return err
	}
	// Reserve the longest uvarint for the length, encode, then move the
	// payload next to the real length: one allocation-free pass after warm-up.
	const lenMax = binary.MaxVarintLen32
	b := append(rw.buf[:0], make([]byte, lenMax)...)
	b, err := e.AppendBinary(b)
	if err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	n := len(b) - lenMax
	var lb [binary.MaxVarintLen32]byte
	ln := binary.PutUvarint(lb[:], uint64(n))
	start := lenMax - ln
	copy(b[start:], lb[:ln])
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[lenMax:], castagnoli))
	rw.buf = b
	if _, err := rw.w.Write(b[start:]); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	return nil
}

// RecordReader reads events from a record file.
type RecordReader struct {
	r       *bufio.Reader
	started bool
	n       int // records read, for error messages
	buf     []byte
}

// NewRecordReader returns a reader of the record file in r.
func NewRecordReader(r io.Reader) *RecordReader {
	return &RecordReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// ErrNotRecord is wrapped by the error for a stream that is not a record
// file of a version this reader knows.
var ErrNotRecord = errors.New("not a kmodguard record file")

// Read returns the next event, or io.EOF after the last one. An empty stream
// is an empty recording. A damaged or truncated file gives an error that
// says which record is bad.
func (rr *RecordReader) Read() (*Event, error) {
	e := new(Event)
	if err := rr.ReadInto(e); err != nil {
		return nil, err
	}
	return e, nil
}

// ReadInto is Read into a caller's Event, replacing all of it.
func (rr *RecordReader) ReadInto(e *Event) error {
	payload, err := rr.ReadRaw()
	if err != nil {
		return err
	}
	if err := e.UnmarshalBinary(payload); err != nil {
		rr.n--
		return rr.fail(err)
	}
	return nil
}

// ReadRaw returns the binary form of the next event, checksum verified but
// not decoded, or io.EOF after the last one. The slice is valid until the
// next read.
func (rr *RecordReader) ReadRaw() ([]byte, error) {
	if !rr.started {
		if err := rr.readHeader(); err != nil {
			return nil, err
		}
		rr.started = true
	}
	if err := rr.skipHeaders(); err != nil {
		return nil, err
	}
	n, err := binary.ReadUvarint(rr.r)
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, rr.fail(fmt.Errorf("length: %w", unexpected(err)))
	}
	if n == 0 || n > MaxEventSize {
		return nil, rr.fail(fmt.Errorf("%w: length %d is outside 1..%d", ErrCorrupt, n, MaxEventSize))
	}
	if cap(rr.buf) < int(n)+4 {
		rr.buf = make([]byte, int(n)+4)
	}
	b := rr.buf[:int(n)+4]
	if _, err := io.ReadFull(rr.r, b); err != nil {
		return nil, rr.fail(unexpected(err))
	}
	payload := b[:n]
	if want, got := binary.LittleEndian.Uint32(b[n:]), crc32.Checksum(payload, castagnoli); want != got {
		return nil, rr.fail(fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want))
	}
	rr.n++
	return payload, nil
}

// ReadHeader checks the file header now rather than at the first read, so
// that a file of the wrong kind is refused when it is opened. An empty
// stream passes: it is an empty recording.
func (rr *RecordReader) ReadHeader() error {
	if rr.started {
		return nil
	}
	switch err := rr.readHeader(); err {
	case nil:
		rr.started = true
		return nil
	case io.EOF:
		return nil
	default:
		return err
	}
}

func (rr *RecordReader) readHeader() error {
	var h [len(RecordMagic) + 1]byte
	n, err := io.ReadFull(rr.r, h[:])
	if n == 0 && err == io.EOF {
		return io.EOF
	}
	if err != nil || string(h[:len(RecordMagic)]) != RecordMagic {
		return fmt.Errorf("%w: bad magic %q", ErrNotRecord, h[:n])
	}
	if v := h[len(RecordMagic)]; v != RecordVersion {
		return fmt.Errorf("%w: version %d, this reader knows %d", ErrNotRecord, v, RecordVersion)
	}
	return nil
}

// skipHeaders skips file headers between records, so that recordings
// joined end to end (cat a b, or a writer appending to an existing file)
// read as one. A header cannot be mistaken for a record: its first byte
// 'K' would be a length of 75, and its second, 'M', is not the codec
// version that starts every event.
func (rr *RecordReader) skipHeaders() error {
	for {
		b, err := rr.r.Peek(2)
		if err != nil || b[0] != RecordMagic[0] || b[1] != RecordMagic[1] {
			return nil
		}
		if err := rr.readHeader(); err != nil {
			return rr.fail(err)
		}
	}
}

func (rr *RecordReader) fail(err error) error {
	return fmt.Errorf("record %d: %w", rr.n+1, err)
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
