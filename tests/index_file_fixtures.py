"""Helpers for tests of index files: take a file's bytes apart and put them together again,
with sections replaced (checksums redone, so only their content is wrong), or as the
previous format version."""

import json
import struct
import zlib

import numpy as np

from fastretrieve import index_format


def sections_of(data):
    """``(format version, {section name: its bytes})`` of a file's bytes."""
    (version,) = struct.unpack_from("<I", data, 8)
    sections = {}
    for number, name in enumerate(index_format.SECTIONS_OF_VERSION[version]):
        offset, length = struct.unpack_from("<QQ", data, index_format._TABLE_START + 24 * number)
        sections[name] = data[offset : offset + length]
    return version, sections


def rebuilt(data, version=None, **replacements):
    """The file bytes with some sections' bytes replaced, laid out, sized and checksummed
    anew (as format ``version``, by default the file's own): only their content is wrong."""
    old_version, sections = sections_of(data)
    version = version or old_version
    sections.update(replacements)
    payloads = [sections[name] for name in index_format.SECTIONS_OF_VERSION[version]]
    offsets, end = index_format._layout([len(payload) for payload in payloads])
    patched = bytearray(end)
    for offset, payload in zip(offsets, payloads):
        patched[offset : offset + len(payload)] = payload
    _, _, _, dim, _, metric, dtype, count, next_id = index_format._FIXED.unpack_from(data, 0)
    table = [(offset, len(payload), zlib.crc32(payload))
             for offset, payload in zip(offsets, payloads)]
    patched[: index_format.HEADER_SIZE] = index_format._header(
        dim, metric.rstrip(b"\0").decode(), dtype.rstrip(b"\0").decode(), count, next_id,
        table, version=version,
    )
    return bytes(patched)


def as_version_1(data):
    """A version 2 file's bytes as format version 1 stored the same index: one metadata
    section, a JSON document of the attributes and the items keyed by id."""
    _, sections = sections_of(data)
    ids = np.frombuffer(sections["ids"], "<i8").tolist()
    offsets = np.frombuffer(sections["item_offsets"], "<u8").tolist()
    items = {str(item_id): json.loads(sections["items"][offsets[row] : offsets[row + 1]])
             for row, item_id in enumerate(ids) if offsets[row + 1] > offsets[row]}
    document = {"attributes": json.loads(sections["attributes"]), "items": items}
    metadata = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return rebuilt(data, version=1, metadata=metadata)
