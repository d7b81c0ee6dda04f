#!/usr/bin/env python3
"""Delay and loss on a link, for kernels built without sch_netem.

Run inside a network namespace whose outgoing packets an iptables rule hands to
an NFQUEUE (`iptables-legacy -A OUTPUT -o eth0 -j NFQUEUE --queue-num 0`). Each
packet is held for DELAY +/- JITTER ms (uniform, as netem does without a
distribution table; packets may be reordered, as with netem) and dropped with
probability LOSS. Verdicts are given by packet id, so each waits its own time.

Speaks the nfnetlink_queue protocol directly (standard library only). Prints
`ready` once bound; exits non-zero if the kernel refuses the queue.
"""

import argparse
import errno
import heapq
import os
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_DROP = 0
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2


def attr(kind, payload):
    """One netlink attribute, padded to 4 bytes."""
    head = struct.pack("=HH", 4 + len(payload), kind)
    pad = b"\0" * (-(4 + len(payload)) % 4)
    return head + payload + pad


def message(kind, queue, attrs, flags=NLM_F_REQUEST, seq=0):
    """A netlink message for the queue subsystem: header, nfgenmsg, attributes."""
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    head = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0)
    return head + body


def attrs_of(data):
    """Attributes after the nfgenmsg header, as {type: payload}."""
    out = {}
    i = 4
    while i + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[i + 4 : i + length]
        i += (length + 3) & ~3
    return out


def configure(sock, queue, maxlen):
    """Binds the queue and asks for packet metadata only; fails on a kernel error."""
    msgs = [
        attr(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)),
        attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META) + b"\0\0\0"),
        attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen)),
    ]
    for seq, a in enumerate(msgs, start=1):
        sock.send(message(NFQNL_MSG_CONFIG, queue, a, NLM_F_REQUEST | NLM_F_ACK, seq))
        reply = sock.recv(65536)
        length, kind = struct.unpack_from("=IH", reply, 0)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", reply, 16)
            if code != 0:
                raise OSError(-code, f"nfqueue config step {seq}: {os.strerror(-code)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0, help="drop probability, 0..1")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    rng = random.Random(args.seed)

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 0))
    configure(sock, args.queue, 16384)
    print("ready", flush=True)

    due = []  # (time, packet id, verdict)
    held = dropped = 0
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else 1.0
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            try:
                data = sock.recv(1 << 20)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # The kernel dropped notifications; those packets are lost,
                    # which a lossy link may do.
                    continue
                raise
            i = 0
            while i + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, i)
                if length < 16:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    hdr = attrs_of(data[i + 16 : i + length]).get(NFQA_PACKET_HDR)
                    if hdr is not None:
                        (packet_id,) = struct.unpack_from(">I", hdr, 0)
                        if rng.random() < args.loss:
                            verdict = NF_DROP
                            dropped += 1
                        else:
                            verdict = NF_ACCEPT
                        wait = args.delay_ms + rng.uniform(-args.jitter_ms, args.jitter_ms)
                        at = time.monotonic() + max(0.0, wait) / 1000.0
                        heapq.heappush(due, (at, packet_id, verdict))
                        held += 1
                i += (length + 3) & ~3
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, packet_id, verdict = heapq.heappop(due)
            sock.send(
                message(
                    NFQNL_MSG_VERDICT,
                    args.queue,
                    attr(NFQA_VERDICT_HDR, struct.pack(">II", verdict, packet_id)),
                )
            )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
