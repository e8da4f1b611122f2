package containerd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// CRIU writes the figures of a dump to stats-dump in its work directory
// (runc --work-path; the shim keeps it only when the driver names it). The
// file is a CRIU image: the
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

// readDumpStats reads the statistics CRIU wrote into its work directory.
func readDumpStats(workDir string) (dumpStats, error) {
	b, err := os.ReadFile(filepath.Join(workDir, criuStatsFile))
	if err != nil {
		return dumpStats{}, err
	}
	return parseDumpStats(b)
}
