//! lookd's depthwise kernel alone on EfficientNet-Lite0's layer shapes, cache-warm (the same
//! input every call), each vector unit this CPU has beside the scalar one:
//!   cargo run --release --example depthwise_layers
//! Prints ms per call and multiply-adds per second. The graph's own timing is
//! `lookd model bench models/default --profile --nodes 20`.

use lookd::model::depthwise::{Geometry, Isa, Layer};

fn main() {
    // (channels, side, kernel, stride) of the shipped backbone's depthwise layers, one of each.
    let shapes = [
        (32, 112, 3, 1),
        (96, 112, 3, 2),
        (144, 56, 3, 1),
        (144, 56, 5, 2),
        (240, 28, 5, 1),
        (672, 14, 5, 1),
        (672, 14, 5, 2),
        (1152, 7, 5, 1),
    ];
    let mut isas = vec![Isa::Scalar];
    if Isa::detect() != Isa::Scalar {
        isas.push(Isa::detect());
    }
    for isa in isas {
        for &(c, side, k, s) in &shapes {
            let pad = k / 2;
            let out = (side + 2 * pad - k) / s + 1;
            let geo = Geometry {
                batch: 1,
                channels: c,
                h: side,
                w: side,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                pad_top: pad,
                pad_left: pad,
                oh: out,
                ow: out,
            };
            let layer = Layer {
                geo,
                weights: (0..c * k * k).map(|i| (i % 7) as f32 * 0.1).collect(),
                bias: vec![0.5; c],
                clip: (0.0, 6.0),
            };
            let x: Vec<f32> = (0..c * side * side).map(|i| (i % 13) as f32 * 0.3).collect();
            let mut y = vec![0f32; c * out * out];
            layer.run(isa, &x, &mut y);
            let n = 50;
            let t = std::time::Instant::now();
            for _ in 0..n {
                layer.run(isa, &x, &mut y);
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
            println!(
                "{:>8} {c:>4} x {side:>3}x{side:<3} {k}x{k} stride {s}: {ms:.3} ms, {:.1} GMAC/s",
                isa.name(),
                geo.macs() as f64 / ms / 1e6
            );
        }
    }
}
