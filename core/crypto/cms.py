"""BER CMS EnvelopedData: parse and decrypt KMS ``CiphertextForRecipient``, and build the same shape.

KMS answers a Decrypt/GenerateDataKey/GenerateRandom call that carries a ``Recipient`` with a BER
(indefinite lengths, chunked OCTET STRINGs) CMS ContentInfo of type envelopedData: one
KeyTransRecipientInfo (version 2, subjectKeyIdentifier rid, RSAES-OAEP with SHA-256 + MGF1-SHA-256)
and AES-256-CBC content. ``cryptography`` refuses all three of those traits, so this module walks
the BER itself. The walker is deliberately small: size, depth and node-count limits, and every
refusal is a :class:`CmsError` naming the byte offset and the field.

:func:`build_enveloped` produces the same shape (used by the emulator's KMS Recipient layer).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.errors import InputTooLarge, NitrodeckError

#: KMS plaintexts are at most 4 KiB; the CMS around them is far below this
MAX_CMS_BYTES = 64 * 1024
MAX_DEPTH = 24
MAX_NODES = 512

OID_DATA = "1.2.840.113549.1.7.1"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_SHA1 = "1.3.14.3.2.26"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"

# universal tag numbers
_INTEGER, _OCTETS, _NULL, _OID, _SEQUENCE, _SET = 2, 4, 5, 6, 16, 17
_UNIVERSAL, _CONTEXT = 0, 2


class CmsError(NitrodeckError):
    """Malformed or unsupported CMS; ``where`` names the byte offset and the field."""

    code = "ND-CMS"


@dataclass(frozen=True)
class Node:
    """One BER TLV. Primitive nodes carry ``value``; constructed ones carry ``children``."""

    cls: int
    constructed: bool
    number: int
    offset: int
    value: bytes = b""
    children: tuple[Node, ...] = ()

    def describe(self) -> str:
        kind = {0: "universal", 1: "application", 2: "context", 3: "private"}[self.cls]
        return f"{kind} {self.number}{' constructed' if self.constructed else ''}"


@dataclass(frozen=True)
class KeyTransRecipient:
    version: int
    subject_key_identifier: bytes
    key_encryption_algorithm: str
    oaep_hash: str
    oaep_mgf: str
    oaep_mgf_hash: str
    encrypted_key: bytes


@dataclass(frozen=True)
class EnvelopedData:
    version: int
    recipients: tuple[KeyTransRecipient, ...]
    content_type: str
    content_encryption_algorithm: str
    iv: bytes
    encrypted_content: bytes
    #: True when encryptedContent came as constructed chunks (a BER-only form)
    chunked_content: bool = field(default=False, compare=False)


# --- the BER walker ---------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.nodes = 0

    def fail(self, offset: int, what: str, message: str) -> CmsError:
        return CmsError(message, where=f"CMS offset {offset}: {what}")

    def node(self, pos: int, end: int, depth: int) -> tuple[Node, int]:
        """Parse one TLV starting at ``pos`` that must finish by ``end``; return it and the next position."""
        if depth > MAX_DEPTH:
            raise self.fail(pos, "nesting", f"nested deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(pos, "structure", f"more than {MAX_NODES} elements")
        start = pos
        if pos >= end:
            raise self.fail(pos, "tag", "data ends where an element should start")
        first = self.data[pos]
        pos += 1
        cls, constructed, number = first >> 6, bool(first & 0x20), first & 0x1F
        if number == 0x1F:  # high tag number form; CMS never needs it beyond a few bytes
            number = 0
            for _ in range(4):
                if pos >= end:
                    raise self.fail(start, "tag", "truncated long-form tag")
                b = self.data[pos]
                pos += 1
                number = (number << 7) | (b & 0x7F)
                if not b & 0x80:
                    break
            else:
                raise self.fail(start, "tag", "long-form tag number too large")
        if pos >= end:
            raise self.fail(start, "length", "truncated before the length")
        lb = self.data[pos]
        pos += 1
        if lb == 0x80:
            if not constructed:
                raise self.fail(start, "length", "indefinite length on a primitive element")
            kids: list[Node] = []
            while True:
                if pos + 2 <= end and self.data[pos] == 0 and self.data[pos + 1] == 0:
                    return Node(cls, True, number, start, children=tuple(kids)), pos + 2
                if pos >= end:
                    raise self.fail(start, "length", "indefinite-length element has no end-of-contents")
                kid, pos = self.node(pos, end, depth + 1)
                kids.append(kid)
        if lb & 0x80:
            count = lb & 0x7F
            if count > 4 or count == 0x7F:
                raise self.fail(start, "length", f"length of {count} bytes is not supported")
            if pos + count > end:
                raise self.fail(start, "length", "truncated length")
            length = int.from_bytes(self.data[pos : pos + count], "big")
            pos += count
        else:
            length = lb
        if pos + length > end:
            raise self.fail(start, "length", f"element of {length} bytes runs past its container")
        if not constructed:
            if cls == _UNIVERSAL and number == 0:
                raise self.fail(start, "tag", "unexpected end-of-contents marker")
            return Node(cls, False, number, start, value=bytes(self.data[pos : pos + length])), pos + length
        inner_end = pos + length
        kids = []
        while pos < inner_end:
            kid, pos = self.node(pos, inner_end, depth + 1)
            kids.append(kid)
        return Node(cls, True, number, start, children=tuple(kids)), inner_end


def parse_ber(data: bytes) -> Node:
    """Parse exactly one BER element (no trailing bytes)."""
    if len(data) > MAX_CMS_BYTES:
        raise InputTooLarge(f"CMS of {len(data)} bytes exceeds the {MAX_CMS_BYTES}-byte limit", where="CMS")
    reader = _Reader(bytes(data))
    root, end = reader.node(0, len(data), 0)
    if end != len(data):
        raise CmsError(f"{len(data) - end} trailing bytes after the CMS", where=f"CMS offset {end}: trailer")
    return root


# --- typed accessors ---------------------------------------------------------------------------------


def _expect(node: Node, cls: int, number: int, constructed: bool | None, what: str) -> Node:
    if (
        node.cls != cls
        or node.number != number
        or (constructed is not None and node.constructed != constructed)
    ):
        raise CmsError(f"expected {what}, found {node.describe()}", where=f"CMS offset {node.offset}: {what}")
    return node


def _children(node: Node, what: str, low: int, high: int) -> tuple[Node, ...]:
    if not node.constructed:
        raise CmsError(f"{what} must be constructed", where=f"CMS offset {node.offset}: {what}")
    if not low <= len(node.children) <= high:
        raise CmsError(
            f"{what} has {len(node.children)} elements, expected {low}..{high}",
            where=f"CMS offset {node.offset}: {what}",
        )
    return node.children


def _octets(node: Node, what: str, depth: int = 0) -> bytes:
    """OCTET STRING content, joining BER constructed chunks."""
    if not node.constructed:
        return node.value
    if depth > 4:
        raise CmsError("OCTET STRING chunks nested too deep", where=f"CMS offset {node.offset}: {what}")
    parts = []
    for kid in node.children:
        _expect(kid, _UNIVERSAL, _OCTETS, None, f"{what} chunk")
        parts.append(_octets(kid, what, depth + 1))
    return b"".join(parts)


def _int(node: Node, what: str) -> int:
    _expect(node, _UNIVERSAL, _INTEGER, False, what)
    if not 1 <= len(node.value) <= 8:
        raise CmsError("INTEGER out of range", where=f"CMS offset {node.offset}: {what}")
    return int.from_bytes(node.value, "big", signed=True)


def _oid(node: Node, what: str) -> str:
    _expect(node, _UNIVERSAL, _OID, False, what)
    raw = node.value
    if not raw or len(raw) > 64 or raw[-1] & 0x80:
        raise CmsError("malformed OBJECT IDENTIFIER", where=f"CMS offset {node.offset}: {what}")
    arcs: list[int] = []
    acc = 0
    for b in raw:
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(acc)
            acc = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def _alg(node: Node, what: str) -> tuple[str, Node | None]:
    _expect(node, _UNIVERSAL, _SEQUENCE, True, what)
    kids = _children(node, what, 1, 2)
    return _oid(kids[0], f"{what}.algorithm"), (kids[1] if len(kids) > 1 else None)


def _hash_alg(node: Node, what: str) -> str:
    oid, params = _alg(node, what)
    if params is not None:
        _expect(params, _UNIVERSAL, _NULL, False, f"{what}.parameters")
    return oid


def _oaep_params(node: Node | None, what: str) -> tuple[str, str, str]:
    """(hash, mgf, mgf hash) with RFC 4055 defaults (SHA-1) where fields are absent."""
    hash_oid, mgf_oid, mgf_hash = OID_SHA1, OID_MGF1, OID_SHA1
    if node is None or (node.cls == _UNIVERSAL and node.number == _NULL):
        return hash_oid, mgf_oid, mgf_hash
    _expect(node, _UNIVERSAL, _SEQUENCE, True, what)
    for kid in _children(node, what, 0, 3):
        if kid.cls != _CONTEXT or not kid.constructed:
            raise CmsError(f"unexpected {kid.describe()}", where=f"CMS offset {kid.offset}: {what}")
        inner = _children(kid, f"{what}[{kid.number}]", 1, 1)[0]
        if kid.number == 0:
            hash_oid = _hash_alg(inner, f"{what}.hashAlgorithm")
        elif kid.number == 1:
            mgf_oid, mgf_params = _alg(inner, f"{what}.maskGenAlgorithm")
            if mgf_params is None:
                raise CmsError(
                    "MGF without a hash", where=f"CMS offset {inner.offset}: {what}.maskGenAlgorithm"
                )
            mgf_hash = _hash_alg(mgf_params, f"{what}.maskGenAlgorithm.hash")
        elif kid.number == 2:
            raise CmsError(
                "OAEP labels are not supported", where=f"CMS offset {kid.offset}: {what}.pSourceAlgorithm"
            )
        else:
            raise CmsError(f"unknown OAEP field [{kid.number}]", where=f"CMS offset {kid.offset}: {what}")
    return hash_oid, mgf_oid, mgf_hash


def _recipient(node: Node) -> KeyTransRecipient:
    what = "KeyTransRecipientInfo"
    if node.cls == _CONTEXT:
        raise CmsError(
            "only KeyTransRecipientInfo is supported (KMS sends no other kind)",
            where=f"CMS offset {node.offset}: {what}",
        )
    _expect(node, _UNIVERSAL, _SEQUENCE, True, what)
    version_n, rid, alg, ek = _children(node, what, 4, 4)
    version = _int(version_n, f"{what}.version")
    if rid.cls != _CONTEXT or rid.number != 0:
        raise CmsError(
            "recipient is not identified by subjectKeyIdentifier",
            where=f"CMS offset {rid.offset}: {what}.rid",
        )
    ski = _octets(rid, f"{what}.rid")
    if not 1 <= len(ski) <= 64:
        raise CmsError("bad subjectKeyIdentifier length", where=f"CMS offset {rid.offset}: {what}.rid")
    alg_oid, params = _alg(alg, f"{what}.keyEncryptionAlgorithm")
    if alg_oid != OID_RSAES_OAEP:
        raise CmsError(
            f"key encryption {alg_oid} is not RSAES-OAEP",
            where=f"CMS offset {alg.offset}: {what}.keyEncryptionAlgorithm",
        )
    oaep_hash, mgf, mgf_hash = _oaep_params(params, f"{what}.RSAES-OAEP-params")
    _expect(ek, _UNIVERSAL, _OCTETS, None, f"{what}.encryptedKey")
    return KeyTransRecipient(
        version, ski, alg_oid, oaep_hash, mgf, mgf_hash, _octets(ek, f"{what}.encryptedKey")
    )


def parse_enveloped(data: bytes) -> EnvelopedData:
    """Parse a ContentInfo(envelopedData) into its fields (no decryption)."""
    root = parse_ber(data)
    _expect(root, _UNIVERSAL, _SEQUENCE, True, "ContentInfo")
    ctype, content = _children(root, "ContentInfo", 2, 2)
    if _oid(ctype, "ContentInfo.contentType") != OID_ENVELOPED_DATA:
        raise CmsError(
            "content type is not envelopedData", where=f"CMS offset {ctype.offset}: ContentInfo.contentType"
        )
    _expect(content, _CONTEXT, 0, True, "ContentInfo.content [0]")
    env = _children(content, "ContentInfo.content", 1, 1)[0]
    _expect(env, _UNIVERSAL, _SEQUENCE, True, "EnvelopedData")
    kids = list(_children(env, "EnvelopedData", 3, 5))
    version = _int(kids.pop(0), "EnvelopedData.version")
    if kids[0].cls == _CONTEXT and kids[0].number == 0:
        kids.pop(0)  # originatorInfo: KMS never sends it, and nothing in it matters for decryption
    if len(kids) < 2:
        raise CmsError(
            "recipientInfos or encryptedContentInfo missing", where=f"CMS offset {env.offset}: EnvelopedData"
        )
    rset = _expect(kids[0], _UNIVERSAL, _SET, True, "EnvelopedData.recipientInfos")
    recipients = tuple(_recipient(r) for r in _children(rset, "EnvelopedData.recipientInfos", 1, 8))
    eci = _expect(kids[1], _UNIVERSAL, _SEQUENCE, True, "EncryptedContentInfo")
    eci_kids = _children(eci, "EncryptedContentInfo", 3, 3)
    content_type = _oid(eci_kids[0], "EncryptedContentInfo.contentType")
    cea, iv_node = _alg(eci_kids[1], "EncryptedContentInfo.contentEncryptionAlgorithm")
    if cea != OID_AES256_CBC:
        raise CmsError(
            f"content encryption {cea} is not aes256-CBC",
            where=f"CMS offset {eci_kids[1].offset}: EncryptedContentInfo.contentEncryptionAlgorithm",
        )
    if iv_node is None:
        raise CmsError(
            "aes256-CBC without an IV", where=f"CMS offset {eci_kids[1].offset}: contentEncryptionAlgorithm"
        )
    _expect(iv_node, _UNIVERSAL, _OCTETS, None, "contentEncryptionAlgorithm.iv")
    iv = _octets(iv_node, "contentEncryptionAlgorithm.iv")
    if len(iv) != 16:
        raise CmsError(f"IV is {len(iv)} bytes, expected 16", where=f"CMS offset {iv_node.offset}: iv")
    enc = _expect(eci_kids[2], _CONTEXT, 0, None, "EncryptedContentInfo.encryptedContent [0]")
    ciphertext = _octets(enc, "encryptedContent")
    if not ciphertext or len(ciphertext) % 16:
        raise CmsError(
            f"encrypted content of {len(ciphertext)} bytes is not whole AES blocks",
            where=f"CMS offset {enc.offset}: encryptedContent",
        )
    return EnvelopedData(
        version, recipients, content_type, cea, iv, ciphertext, chunked_content=enc.constructed
    )


# --- decrypt / build --------------------------------------------------------------------------------


def subject_key_identifier(public_key: rsa.RSAPublicKey) -> bytes:
    """32-byte SKI we put in the rid: SHA-256 of the SubjectPublicKeyInfo DER."""
    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


def decrypt(data: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Decrypt a CiphertextForRecipient with the enclave's ephemeral RSA key."""
    env = parse_enveloped(data)
    if len(env.recipients) != 1:
        raise CmsError(
            f"{len(env.recipients)} recipients; KMS sends exactly one", where="CMS: recipientInfos"
        )
    rec = env.recipients[0]
    if rec.oaep_hash != OID_SHA256 or rec.oaep_mgf != OID_MGF1 or rec.oaep_mgf_hash != OID_SHA256:
        raise CmsError("OAEP parameters are not SHA-256 / MGF1-SHA-256", where="CMS: RSAES-OAEP-params")
    try:
        cek = private_key.decrypt(
            rec.encrypted_key, OAEP(mgf=MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        )
    except ValueError as exc:
        raise CmsError(
            "the content key does not decrypt with this key pair", where="CMS: encryptedKey"
        ) from exc
    if len(cek) != 32:
        raise CmsError(f"content key is {len(cek)} bytes, expected 32", where="CMS: encryptedKey")
    dec = Cipher(algorithms.AES(cek), modes.CBC(env.iv)).decryptor()
    padded = dec.update(env.encrypted_content) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise CmsError("bad padding after decryption", where="CMS: encryptedContent") from exc


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _indef(tag: int, content: bytes) -> bytes:
    return bytes([tag | 0x20, 0x80]) + content + b"\x00\x00"


def _oid_der(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def build_enveloped(plaintext: bytes, recipient: rsa.RSAPublicKey, *, chunk: int = 0) -> bytes:
    """KMS-shaped BER CMS for ``plaintext`` to ``recipient``. ``chunk`` > 0 splits the content into chunks."""
    cek, iv = os.urandom(32), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    ek = recipient.encrypt(cek, OAEP(mgf=MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    sha256 = _tlv(0x30, _oid_der(OID_SHA256) + b"\x05\x00")
    oaep = _tlv(0x30, _tlv(0xA0, sha256) + _tlv(0xA1, _tlv(0x30, _oid_der(OID_MGF1) + sha256)))
    ktri = _tlv(
        0x30,
        _tlv(0x02, b"\x02")
        + _tlv(0x80, subject_key_identifier(recipient))
        + _tlv(0x30, _oid_der(OID_RSAES_OAEP) + oaep)
        + _tlv(0x04, ek),
    )
    if chunk > 0:
        pieces = b"".join(_tlv(0x04, ciphertext[i : i + chunk]) for i in range(0, len(ciphertext), chunk))
        content = _indef(0x80, pieces)
    else:
        content = _tlv(0x80, ciphertext)
    eci = _indef(0x10, _oid_der(OID_DATA) + _tlv(0x30, _oid_der(OID_AES256_CBC) + _tlv(0x04, iv)) + content)
    env = _indef(0x10, _tlv(0x02, b"\x02") + _tlv(0x31, ktri) + eci)
    return _indef(0x10, _oid_der(OID_ENVELOPED_DATA) + _indef(0x80, env))
