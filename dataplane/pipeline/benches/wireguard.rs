//! WireGuard's cipher and Ferry's per-packet WireGuard work, ns per byte, with criterion:
//!
//! - `chacha20poly1305/{seal,open}/N`: the AEAD alone (ring's ChaCha20-Poly1305, which
//!   boringtun's transport uses), sealing or opening N bytes in place with a 16-byte tag.
//! - `wg_encapsulate/N`: `WgDevice::encapsulate` with an established session — peer lookup,
//!   counter, header, seal, copy out: what the forward pass does per packet besides the outer
//!   headers.
//!
//! Criterion prints throughput in bytes/s; ns/byte = 1e9 / that. `cargo bench -p pipeline
//! --bench wireguard -- --warm-up-time 1 --measurement-time 3`
#![forbid(unsafe_code)]

use criterion::{BenchmarkId, Criterion, Throughput};
use pipeline::wire::MacAddr;
use pipeline::wireguard::{
    Decapsulated, Encapsulated, PeerConfig, WgDevice, WgPrivateKey, DEFAULT_PORT, MAX_DATAGRAM,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};

const SIZES: [usize; 3] = [64, 512, 1420];

fn aead(c: &mut Criterion) {
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[0x42; 32]).expect("key"));
    let mut g = c.benchmark_group("chacha20poly1305");
    for n in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        let mut buf = vec![0x17u8; n];
        g.bench_with_input(BenchmarkId::new("seal", n), &n, |b, _| {
            b.iter(|| {
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([0; 12]),
                        Aad::empty(),
                        black_box(&mut buf),
                    )
                    .expect("seal");
                black_box(tag.as_ref()[0]);
            });
        });
        // A sealed message to open again and again (opening does not change the input here:
        // the plaintext goes to a copy).
        let mut sealed = vec![0x17u8; n];
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .expect("seal");
        sealed.extend_from_slice(tag.as_ref());
        let mut work = sealed.clone();
        g.bench_with_input(BenchmarkId::new("open", n), &n, |b, _| {
            b.iter(|| {
                work.copy_from_slice(&sealed);
                let p = key
                    .open_in_place(
                        Nonce::assume_unique_for_key([0; 12]),
                        Aad::empty(),
                        black_box(&mut work),
                    )
                    .expect("open");
                black_box(p.len());
            });
        });
    }
    g.finish();
}

fn device(c: &mut Criterion) {
    let (ka, kb) = (
        WgPrivateKey::from_bytes([1; 32]),
        WgPrivateKey::from_bytes([2; 32]),
    );
    let (a_addr, b_addr) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut a = WgDevice::new(&ka, DEFAULT_PORT);
    let mut b = WgDevice::new(&kb, DEFAULT_PORT);
    a.sync(&[PeerConfig {
        node: b_addr,
        key: kb.public_key(),
        mac: Some(MacAddr([2; 6])),
    }]);
    b.sync(&[PeerConfig {
        node: a_addr,
        key: ka.public_key(),
        mac: Some(MacAddr([1; 6])),
    }]);
    // Handshake.
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let pkt = [0x45u8; 20];
    let Encapsulated::Handshake { len, .. } = a.encapsulate(b_addr, &pkt, &mut buf) else {
        panic!("handshake expected")
    };
    let from_a = SocketAddrV4::new(a_addr, DEFAULT_PORT);
    let from_b = SocketAddrV4::new(b_addr, DEFAULT_PORT);
    let Decapsulated::Reply { len, .. } =
        b.decapsulate(from_a, MacAddr([1; 6]), &buf[..len], &mut out)
    else {
        panic!("response expected")
    };
    a.decapsulate(from_b, MacAddr([2; 6]), &out[..len], &mut buf);
    let mut g = c.benchmark_group("wg_encapsulate");
    for n in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        let packet = vec![0x45u8; n];
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
            bch.iter(
                || match a.encapsulate(b_addr, black_box(&packet), &mut buf) {
                    Encapsulated::Data { len, .. } => black_box(len),
                    r => panic!("{r:?}"),
                },
            );
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    aead(&mut c);
    device(&mut c);
    c.final_summary();
}
