# The packed-batch layout shared by _batch.pyx (pack/unpack) and _route.pyx (route+pack):
# ``index`` = BatchHeader, Entry[nentries], FrameRef[nframes] (docs/protocol.md).
# Included textually by both, so the two kernels cannot drift apart.
from libc.stdint cimport int64_t, uint32_t, uint64_t

DEF MAGIC = 0x31424644  # "DFB1" little endian
DEF VERSION = 1
DEF EXTERNAL_NONE = -1

cdef packed struct BatchHeader:
    uint32_t magic
    uint32_t version
    uint32_t nentries
    uint32_t nframes

cdef packed struct Entry:
    int64_t event_number
    uint32_t stream_id
    uint32_t first_frame
    uint32_t nframes
    uint32_t reserved

cdef packed struct FrameRef:
    uint64_t offset
    uint64_t length
    int64_t external
