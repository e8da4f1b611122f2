package containerd

import (
	"archive/tar"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/encoding/protowire"
)

// CRIU writes the figures of a dump to stats-dump in its images directory,
// which the task checkpoint's tar carries. The file is a CRIU image: the
// image-service and stats magics, a little-endian length, then a
// stats_entry message whose field 1 is a dump_stats_entry. Its times are
// in microseconds; frozen_time is how long CRIU kept the tasks frozen.
const (
	criuStatsFile       = "stats-dump"
	criuImgServiceMagic = 0x55105940
	criuStatsMagic      = 0x57093306
)

// dumpStats are the figures of one CRIU dump.
type dumpStats struct {
	// Freezing is how long freezing the tasks took, Frozen how long they
	// stayed frozen: the whole dump, the pages' writing included (CRIU lets
	// them run again only once its images are written).
	Freezing, Frozen, MemDump, MemWrite time.Duration
	PagesWritten                        uint64
}

// parseDumpStats decodes the contents of a stats-dump file.
func parseDumpStats(b []byte) (dumpStats, error) {
	if len(b) < 12 {
		return dumpStats{}, errors.New("stats-dump: too short")
	}
	if binary.LittleEndian.Uint32(b[0:]) != criuImgServiceMagic || binary.LittleEndian.Uint32(b[4:]) != criuStatsMagic {
		return dumpStats{}, errors.New("stats-dump: not a CRIU stats image")
	}
	size := binary.LittleEndian.Uint32(b[8:])
	if uint64(len(b)-12) < uint64(size) {
		return dumpStats{}, errors.New("stats-dump: truncated")
	}
	entry := b[12 : 12+size]
	var dump []byte
	if err := eachField(entry, func(num protowire.Number, v uint64, bytes []byte) {
		if num == 1 && bytes != nil {
			dump = bytes
		}
	}); err != nil {
		return dumpStats{}, err
	}
	if dump == nil {
		return dumpStats{}, errors.New("stats-dump: no dump statistics")
	}
	var s dumpStats
	us := func(v uint64) time.Duration { return time.Duration(v) * time.Microsecond }
	err := eachField(dump, func(num protowire.Number, v uint64, _ []byte) {
		switch num {
		case 1:
			s.Freezing = us(v)
		case 2:
			s.Frozen = us(v)
		case 3:
			s.MemDump = us(v)
		case 4:
			s.MemWrite = us(v)
		case 7:
			s.PagesWritten = v
		}
	})
	return s, err
}

// eachField calls f with every field of the protobuf message b: a varint's
// value, or a length-delimited field's bytes.
func eachField(b []byte, f func(num protowire.Number, v uint64, bytes []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("stats-dump: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return fmt.Errorf("stats-dump: %w", protowire.ParseError(m))
			}
			f(num, v, nil)
			n = m
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("stats-dump: %w", protowire.ParseError(m))
			}
			f(num, 0, v)
			n = m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("stats-dump: %w", protowire.ParseError(n))
			}
		}
		b = b[n:]
	}
	return nil
}

// readDumpStats reads the CRIU statistics of the task checkpoint in the
// checkpoint image index target. It seeks over the other files of the
// checkpoint's tar, so it reads little more than their headers.
func (d *Driver) readDumpStats(ctx context.Context, target ocispec.Descriptor) (dumpStats, error) {
	cs := d.client.ContentStore()
	data, err := content.ReadBlob(ctx, cs, target)
	if err != nil {
		return dumpStats{}, err
	}
	var index ocispec.Index
	if err := json.Unmarshal(data, &index); err != nil {
		return dumpStats{}, err
	}
	for _, m := range index.Manifests {
		if m.MediaType != images.MediaTypeContainerd1Checkpoint {
			continue
		}
		ra, err := cs.ReaderAt(ctx, m)
		if err != nil {
			return dumpStats{}, err
		}
		defer ra.Close()
		tr := tar.NewReader(io.NewSectionReader(ra, 0, ra.Size()))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return dumpStats{}, errors.New("the checkpoint has no " + criuStatsFile)
			}
			if err != nil {
				return dumpStats{}, err
			}
			if h.Name == criuStatsFile || h.Name == "./"+criuStatsFile {
				b, err := io.ReadAll(io.LimitReader(tr, 1<<16))
				if err != nil {
					return dumpStats{}, err
				}
				return parseDumpStats(b)
			}
		}
	}
	return dumpStats{}, errors.New("no task checkpoint in the image")
}
