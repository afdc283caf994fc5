#!/usr/bin/env python3
"""Reference decryptor for OffsiteDB sealed objects (docs/FORMAT.md), independent of OffsiteDB.

    python3 offsitedb-decrypt.py KEYFILE < data > artifact.dump.gz
    gunzip -c artifact.dump.gz | pg_restore -d postgres://...

Needs only the `cryptography` package. Exits non-zero on any damage; output is then incomplete.
"""
import base64, struct, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

def hkdf(key, salt, info, length):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)

def main(keyfile, src, dst):
    lines = [l.strip() for l in open(keyfile)]
    keys = [l for l in lines if l and not l.startswith("#")]
    if len(keys) != 1:
        sys.exit("a key file holds exactly one base64 line besides # comments")
    master = base64.b64decode(keys[0], validate=True)
    if len(master) != 32:
        sys.exit("a key is 32 bytes")
    header = src.read(62)
    magic, version, alg, key_id, salt, chunk = struct.unpack(">8sBB16s32sI", header)
    if magic != b"OSDBSEAL" or version != 1 or alg != 1:
        sys.exit("not a sealed v1 AES-256-GCM object")
    if key_id != hkdf(master, None, b"offsitedb v1 key id", 16):
        sys.exit("wrong key: object key id " + key_id.hex())
    aead = AESGCM(hkdf(master, salt, b"offsitedb v1 object", 32))
    index, chunk_len = 0, chunk + 16
    current = src.read(chunk_len)
    while True:
        following = src.read(chunk_len) if len(current) == chunk_len else b""
        last = not following
        nonce = bytes(7) + struct.pack(">IB", index, 1 if last else 0)
        dst.write(aead.decrypt(nonce, current, header))  # raises InvalidTag on any damage
        if last:
            return
        index, current = index + 1, following

if __name__ == "__main__":
    main(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
