package containerd

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
)

// statsImage encodes a stats-dump image as CRIU writes it, with a dump
// entry of these microsecond times and pages written, and an unknown field.
func statsImage(freezing, frozen, memdump, memwrite, pages uint64) []byte {
	var dump []byte
	for i, v := range []uint64{freezing, frozen, memdump, memwrite} {
		dump = protowire.AppendTag(dump, protowire.Number(i+1), protowire.VarintType)
		dump = protowire.AppendVarint(dump, v)
	}
	dump = protowire.AppendTag(dump, 7, protowire.VarintType)
	dump = protowire.AppendVarint(dump, pages)
	dump = protowire.AppendTag(dump, 99, protowire.Fixed64Type)
	dump = protowire.AppendFixed64(dump, 1)
	var entry []byte
	entry = protowire.AppendTag(entry, 1, protowire.BytesType)
	entry = protowire.AppendBytes(entry, dump)
	out := binary.LittleEndian.AppendUint32(nil, criuImgServiceMagic)
	out = binary.LittleEndian.AppendUint32(out, criuStatsMagic)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(entry)))
	return append(out, entry...)
}

func TestParseDumpStats(t *testing.T) {
	s, err := parseDumpStats(statsImage(1200, 312345, 40000, 250000, 65536))
	require.NoError(t, err)
	assert.Equal(t, 1200*time.Microsecond, s.Freezing)
	assert.Equal(t, 312345*time.Microsecond, s.Frozen)
	assert.Equal(t, 40*time.Millisecond, s.MemDump)
	assert.Equal(t, 250*time.Millisecond, s.MemWrite)
	assert.Equal(t, uint64(65536), s.PagesWritten)

	good := statsImage(1, 2, 3, 4, 5)
	for name, b := range map[string][]byte{
		"empty":     nil,
		"bad magic": append([]byte{1, 2, 3, 4}, good[4:]...),
		"truncated": good[:len(good)-3],
		"no dump":   append(good[:8:8], 0, 0, 0, 0),
	} {
		_, err := parseDumpStats(b)
		assert.Error(t, err, name)
	}
}
