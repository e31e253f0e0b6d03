#!/usr/bin/env python3
"""A pymodbus server (a Modbus peer we did not write) for the gateway's tests.

Serves one register map, over TCP (`--tcp`) or RTU on a serial device
(`--rtu /dev/pts/N`), for unit ids 1 and 2 (unit 2 serves the same map with
holding register 6 = -43 instead of -42). Unmapped addresses answer with
exception 0x02 (illegal data address): holding 22..29 and 100..109 are such
holes on purpose.

Holding registers (0-based protocol addresses; pymodbus stores them at +1):
    0-1    f32 1234.5678, word swapped (CDAB)
    2-3    u32 4_000_000_000 (ABCD), a 32-bit counter above i32::MAX
    4-5    u32 0x12345678, word swapped (CDAB)
    6      i16 -42
    7      u16 65535
    8-9    i32 -123456, bytes swapped in each word (BADC)
    10-13  f64 12345.678 (ABCD)
    14-17  u64 2**40 + 7, little-endian (DCBA)
    18-19  zeros
    20-21  f32 NaN (ABCD)
    30     u16 7   (reachable only without reading the hole 22..29)
Input registers:  0-1 f32 230.5, little-endian (DCBA)
Coils:            0-2 = 1, 0, 1
Discrete inputs:  0 = 1

Prints "READY <port or device>" on stdout once it accepts requests, then
serves until killed.
"""

import argparse
import asyncio
import math
import socket
import struct
import sys

from pymodbus.datastore import (
    ModbusServerContext,
    ModbusSlaveContext,
    ModbusSparseDataBlock,
)
from pymodbus.framer import FramerType
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer


def words_be(fmt, value):
    """Big-endian 16-bit words of a packed value (ABCD order)."""
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def swap_words(words):
    return list(reversed(words))


def swap_bytes(words):
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


def holding_map(i16_value):
    regs = {}

    def put(addr, words):
        for i, w in enumerate(words):
            regs[addr + i] = w

    put(0, swap_words(words_be("f", 1234.5678)))
    put(2, words_be("I", 4_000_000_000))
    put(4, swap_words(words_be("I", 0x12345678)))
    put(6, words_be("h", i16_value))
    put(7, [65535])
    put(8, swap_bytes(words_be("i", -123456)))
    put(10, words_be("d", 12345.678))
    put(14, swap_bytes(swap_words(words_be("Q", 2**40 + 7))))
    put(18, [0, 0])
    put(20, words_be("f", math.nan))
    put(30, [7])
    return regs


def block(regs):
    # pymodbus 3.8 stores protocol address a at a + 1.
    return ModbusSparseDataBlock({a + 1: v for a, v in regs.items()})


def context():
    slaves = {}
    for unit, i16_value in ((1, -42), (2, -43)):
        slaves[unit] = ModbusSlaveContext(
            hr=block(holding_map(i16_value)),
            ir=block(dict(enumerate(swap_bytes(swap_words(words_be("f", 230.5)))))),
            co=block({0: 1, 1: 0, 2: 1}),
            di=block({0: 1}),
        )
    return ModbusServerContext(slaves=slaves, single=False)


async def announce_when_listening(port):
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.02)
    print(f"READY {port}", flush=True)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tcp", action="store_true", help="serve Modbus TCP on a free 127.0.0.1 port")
    ap.add_argument("--rtu", help="serve Modbus RTU on this serial device")
    ap.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args()
    ctx = context()
    if args.tcp:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        asyncio.get_running_loop().create_task(announce_when_listening(port))
        await StartAsyncTcpServer(context=ctx, address=("127.0.0.1", port))
    elif args.rtu:
        # A serial server has no "listening" state to wait for: the test
        # probes until the first answer arrives.
        print(f"READY {args.rtu}", flush=True)
        await StartAsyncSerialServer(
            context=ctx,
            framer=FramerType.RTU,
            port=args.rtu,
            baudrate=args.baud,
            bytesize=8,
            parity="N",
            stopbits=1,
            # A unit that is not on a real RS-485 line stays silent.
            ignore_missing_slaves=True,
        )
    else:
        ap.error("give --tcp or --rtu DEVICE")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
