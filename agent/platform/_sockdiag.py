"""Established TCP sockets from the Linux kernel over NETLINK_SOCK_DIAG (what `ss` uses).

The agent looks every few seconds; reading /proc/net/tcp (or psutil.net_connections, which also walks every
process's descriptors) costs several milliseconds per look on a large machine, a netlink dump well under one.
"""

from __future__ import annotations

import socket
import struct

from agent.platform import TcpConnection

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_msg: family, state, timer, retrans, then inet_diag_sockid (sport, dport big-endian, src[16], dst[16],
# if, cookie[2]), then expires, rqueue, wqueue, uid, inode.
_MSG_HEAD = struct.Struct("=BBBB")
_PORTS = struct.Struct(">HH")
_UID_INODE = struct.Struct("=II")
_UID_OFFSET = 4 + 48 + 12


def _request(family: int, states: int) -> bytes:
    req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, states) + bytes(48)
    return _NLMSG.pack(_NLMSG.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req


def dump(family: int, states: int = (1 << TCP_ESTABLISHED) | (1 << TCP_SYN_SENT)) -> list[TcpConnection]:
    """TCP sockets of `family` (AF_INET or AF_INET6) in `states`; raises OSError when netlink is unavailable."""
    out: list[TcpConnection] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as s:
        s.settimeout(2.0)
        s.send(_request(family, states))
        for _ in range(100_000):  # bounded: a dump ends with NLMSG_DONE long before this
            data = s.recv(1 << 16)
            if not data:
                return out
            off = 0
            while off + _NLMSG.size <= len(data):
                length, kind, _, _, _ = _NLMSG.unpack_from(data, off)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR or length < _NLMSG.size:
                    raise OSError("sock_diag: the kernel answered with an error")
                out.append(_parse(data, off + _NLMSG.size))
                off += (length + 3) & ~3
    return out


def _parse(data: bytes, at: int) -> TcpConnection:
    fam = _MSG_HEAD.unpack_from(data, at)[0]
    sport, dport = _PORTS.unpack_from(data, at + 4)
    width = 4 if fam == socket.AF_INET else 16
    src = socket.inet_ntop(fam, data[at + 8 : at + 8 + width])
    dst = socket.inet_ntop(fam, data[at + 24 : at + 24 + width])
    uid, inode = _UID_INODE.unpack_from(data, at + _UID_OFFSET)
    return TcpConnection(src, sport, dst, dport, uid=uid, inode=inode)


def established() -> list[TcpConnection]:
    return dump(socket.AF_INET) + dump(socket.AF_INET6)
