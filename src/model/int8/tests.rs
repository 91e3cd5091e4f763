use super::*;

/// A small deterministic generator (xorshift), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
}

#[allow(clippy::too_many_arguments)]
fn layer(
    rng: &mut Rng,
    ci: usize,
    co: usize,
    size: (usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    depthwise: bool,
) -> Quantized {
    let (h, w) = size;
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (w + 2 * pad - k) / stride + 1;
    let geo = Geometry {
        batch: 2,
        ci,
        co,
        h,
        w,
        kh: k,
        kw: k,
        sh: stride,
        sw: stride,
        pad_top: pad,
        pad_left: pad,
        oh,
        ow,
        depthwise,
    };
    let cin = if depthwise { 1 } else { ci };
    // Weights over the whole i8 range (-128 included) and activations over all of u8: the
    // extremes are where a saturating or narrowing product would show.
    let weights: Vec<i8> = (0..co * cin * k * k).map(|_| rng.byte() as i8).collect();
    let bias: Vec<i32> = (0..co).map(|_| (rng.next() % 20_001) as i32 - 10_000).collect();
    let per = (cin * k * k) as f32;
    // Scales that put the outputs across the u8 range, some clipped at both ends.
    let mul: Vec<f32> = (0..co).map(|_| (0.5 + (rng.next() % 1000) as f32 / 1000.0) / (per * 40.0)).collect();
    Quantized { geo, weights, bias, x_zero: rng.byte(), mul, y_zero: rng.byte() }
}

fn input(rng: &mut Rng, g: &Geometry) -> Vec<u8> {
    let mut x: Vec<u8> = (0..g.batch * g.ci * g.h * g.w).map(|_| rng.byte()).collect();
    // Runs of 255 and 0 next to each other: the largest products of both signs in one sum.
    for (i, v) in x.iter_mut().enumerate().take(64) {
        *v = if i % 2 == 0 { 255 } else { 0 };
    }
    x
}

fn dw_isas() -> Vec<depthwise::Isa> {
    let best = depthwise::Isa::detect();
    if best == depthwise::Isa::Scalar {
        vec![best]
    } else {
        vec![depthwise::Isa::Scalar, best]
    }
}

#[test]
fn every_path_gives_the_textbook_bytes_for_every_kind_of_layer() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let cases = [
        // (ci, co, size, kernel, stride, pad, depthwise)
        (16, 96, (13, 11), 1, 1, 0, false), // pointwise, points not a whole tile
        (37, 5, (7, 9), 1, 1, 0, false),    // odd channel counts both ways
        (3, 32, (17, 17), 3, 2, 1, false),  // the stem: im2col, k = 27
        (3, 8, (38, 41), 3, 2, 1, false),   // a wider stem: rows of 21 outputs (16 at once, then 5)
        (24, 40, (9, 9), 3, 1, 1, false),   // ResNet's 3×3
        (8, 16, (15, 15), 7, 2, 3, false),  // ResNet's 7×7 stem
        (32, 32, (12, 12), 3, 1, 1, true),  // depthwise 3×3
        (48, 48, (13, 13), 3, 2, 1, true),  // depthwise stride 2
        (20, 20, (11, 11), 5, 2, 2, true),  // depthwise 5×5 stride 2
        (20, 20, (7, 7), 5, 1, 2, true),    // depthwise 5×5
    ];
    for (ci, co, size, k, stride, pad, depthwise) in cases {
        let mut q = layer(&mut rng, ci, co, size, k, stride, pad, depthwise);
        // A bias far past 2^24 (a channel with tiny weights, whose scale makes its bias huge in
        // accumulator units), its multiplier bringing it back into range.
        q.bias[0] = 30_000_000;
        q.mul[0] = 128.0 / 30_000_000.0;
        let x = input(&mut rng, &q.geo);
        let want = q.reference(&x);
        let spread = want.iter().filter(|&&v| v != 0 && v != 255).count();
        assert!(spread * 2 > want.len(), "{:?}: most outputs must fall inside the u8 range", q.geo);
        let isas = if depthwise { vec![Isa::Scalar] } else { Isa::available() };
        for isa in isas {
            for dw in dw_isas() {
                let l = Layer::new(q.clone(), isa, dw);
                let mut y = vec![0u8; want.len()];
                l.run(&x, &mut y);
                let differ = y.iter().zip(&want).filter(|(a, b)| a != b).count();
                assert_eq!(differ, 0, "{} / {}: {:?}", isa.name(), dw.name(), q.geo);
            }
        }
    }
}

/// `w · x` on `isa` against the scalar path, with a guard past the output.
fn matches_scalar(isa: Isa, w: &[i8], x: &[u8], co: usize, k: usize, points: usize, mul: f32) {
    let bias: Vec<i32> = (0..co as i32).map(|c| 1000 - 300 * c).collect();
    let mul = vec![mul; co];
    let r = gemm::Requant { bias: &bias, x_zero: 3, mul: &mul, y_zero: 128 };
    let p = gemm::Packed::new(isa, w, co, k, &r);
    let mut out = vec![0xAA; co * points + 7];
    p.run(x, points, &mut out[..co * points]);
    assert!(out[co * points..].iter().all(|&v| v == 0xAA), "{}: wrote past the end", isa.name());
    let scalar = gemm::Packed::new(Isa::Scalar, w, co, k, &r);
    let mut want = vec![0; co * points];
    scalar.run(x, points, &mut want);
    assert_eq!(&out[..co * points], &want[..], "{} co {co} k {k} points {points}", isa.name());
}

#[test]
fn the_matrix_product_writes_every_output_and_nothing_past_it() {
    let mut rng = Rng(77);
    for isa in Isa::available() {
        // Points past the last whole tile of 16: 1, 15, 2, 12 and 9 of them (each kernel's
        // narrower last tiles).
        for (co, k, points) in [
            (1, 1, 1),
            (5, 3, 17),
            (8, 64, 64),
            (9, 13, 65),
            (4, 4, 130),
            (6, 6, 15),
            (3, 8, 44),
            (5, 12, 41),
        ] {
            let w: Vec<i8> = (0..co * k).map(|_| rng.byte() as i8).collect();
            let x: Vec<u8> = (0..k * points).map(|_| rng.byte()).collect();
            matches_scalar(isa, &w, &x, co, k, points, 1.0 / (k as f32 * 100.0));
        }
    }
}

#[test]
fn symmetric_weights_at_their_extremes_give_the_scalar_bytes() {
    // Weights of ±127 only, as symmetric quantisation makes them (never −128), and activations
    // of 0 and 255: the largest products of both signs. On the `smull` path two products are
    // summed in i16 before they are widened (2 · 128 · 127 = 32,512 at most); a layer with a −128
    // weight takes the widening path instead (the test above).
    let mut rng = Rng(99);
    for isa in Isa::available() {
        for (co, k, points) in [(4, 8, 16), (7, 13, 37), (16, 64, 33), (3, 2, 5)] {
            let w: Vec<i8> =
                (0..co * k).map(|_| if rng.next().is_multiple_of(2) { 127 } else { -127 }).collect();
            let x: Vec<u8> =
                (0..k * points).map(|_| if rng.next().is_multiple_of(3) { 255 } else { 0 }).collect();
            matches_scalar(isa, &w, &x, co, k, points, 1.0 / (k as f32 * 200.0));
            // Every weight and activation alike: the sums at their largest.
            let w = vec![-127i8; co * k];
            let x = vec![0u8; k * points];
            matches_scalar(isa, &w, &x, co, k, points, 1.0 / (k as f32 * 200.0));
        }
    }
}

#[test]
fn an_isa_is_named_and_one_this_cpu_lacks_is_refused() {
    for isa in Isa::available() {
        assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
    }
    let err = "avx1024".parse::<Isa>().unwrap_err();
    assert!(err.contains("\"avx1024\"") && err.contains("scalar"), "{err}");
}

#[test]
fn requantisation_rounds_half_to_even_and_saturates() {
    for (acc, m, zero, want) in [
        (5, 0.5, 0, 2),   // 2.5 → 2
        (7, 0.5, 0, 4),   // 3.5 → 4
        (-5, 0.5, 10, 8), // -2.5 → -2
        (-7, 0.5, 10, 6), // -3.5 → -4
        (3, 1.0, 100, 103),
        (i32::MAX, 1.0, 0, 255),
        (i32::MIN, 1.0, 255, 0),
        (1 << 30, 1e-9, 0, 1), // 1.07 → 1
    ] {
        assert_eq!(gemm::requant(acc, m, zero), want, "{acc} · {m} + {zero}");
        let exact = ((acc as f32 * m).round_ties_even() as i64 + zero as i64).clamp(0, 255) as u8;
        assert_eq!(exact, want);
    }
}
