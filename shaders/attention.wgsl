// Fused multi-head attention with an online softmax, for ARD's trajectory masks.
//
//   out[bh, i, :] = softmax_j(scale * q[bh, i, :] . k[bh, j, :]) v[bh, j, :]
//
// over the keys j that query i may see. Tokens come in steps of `tokens_per_step`; query i is
// in step `q_step_offset + i / tokens_per_step`, key j in step `j / tokens_per_step`:
//   mode 0 (none)           every key
//   mode 1 (block-causal)   keys of steps <= the query's step (ARD's lower blocks; with a KV
//                           cache the queries are the current step, q_step_offset = its index)
//   mode 2 (block-diagonal) keys of the query's own step (ARD's upper blocks)
// A workgroup takes WG_SIZE query rows, one per invocation, and walks only the key tiles its
// rows may see: masked tiles are skipped, never scored. Keys and values are staged tile by tile
// in workgroup memory; each row keeps its running max, normaliser and weighted sum in registers,
// so no score matrix exists anywhere.
//
// Layout: q [BH, Tq, D], k and v [BH, Tk, D], out [BH, Tq, D], f32, contiguous.
// HEAD_DIM, WG_SIZE and TILE_K are substituted by the host before compiling
// (one pipeline per head dimension).

const HEAD_DIM: u32 = {{head_dim}}u;
const WG_SIZE: u32 = {{wg_size}}u;
const TILE_K: u32 = {{tile_k}}u;

struct Params {
    bh: u32,
    tq: u32,
    tk: u32,
    tokens_per_step: u32,
    q_step_offset: u32,
    mode: u32,
    scale: f32,
    _pad: u32,
}

// Inputs are read_write too: on burn's device, tensors may share one buffer page, and a buffer
// bound read-only and read-write in one dispatch is a usage conflict.
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> k_tile: array<f32, {{tile_elems}}>;
var<workgroup> v_tile: array<f32, {{tile_elems}}>;
var<workgroup> range_lo: u32;
var<workgroup> range_hi: u32;

// The keys [lo, hi) that query row `i` may see.
fn key_range(i: u32) -> vec2<u32> {
    let t = params.tokens_per_step;
    let step = params.q_step_offset + i / t;
    switch params.mode {
        case 1u: {
            return vec2<u32>(0u, min(params.tk, (step + 1u) * t));
        }
        case 2u: {
            return vec2<u32>(min(params.tk, step * t), min(params.tk, (step + 1u) * t));
        }
        default: {
            return vec2<u32>(0u, params.tk);
        }
    }
}

@compute @workgroup_size({{wg_size}})
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bh = wg.y;
    let row0 = wg.x * WG_SIZE;
    let i = row0 + lid;
    let in_range = i < params.tq;

    // The workgroup's key range: the union of its rows' ranges (rows are consecutive, and
    // every mode's range moves monotonically with the row).
    if lid == 0u {
        let last = min(row0 + WG_SIZE, params.tq) - 1u;
        range_lo = key_range(row0).x;
        range_hi = key_range(last).y;
    }
    let lo = workgroupUniformLoad(&range_lo);
    let hi = workgroupUniformLoad(&range_hi);
    let mine = key_range(min(i, params.tq - 1u));

    var q_row: array<f32, HEAD_DIM>;
    var acc: array<f32, HEAD_DIM>;
    let q_base = (bh * params.tq + min(i, params.tq - 1u)) * HEAD_DIM;
    for (var d = 0u; d < HEAD_DIM; d++) {
        q_row[d] = q[q_base + d] * params.scale;
        acc[d] = 0.0;
    }
    var m = -3.0e38;
    var l = 0.0;
    var s: array<f32, TILE_K>;

    let kv_base = bh * params.tk * HEAD_DIM;
    for (var t0 = lo; t0 < hi; t0 += TILE_K) {
        // Stage TILE_K keys and values (the tail tile reads only what exists).
        for (var e = lid; e < TILE_K * HEAD_DIM; e += WG_SIZE) {
            let j = t0 + e / HEAD_DIM;
            if j < hi {
                k_tile[e] = k[kv_base + j * HEAD_DIM + e % HEAD_DIM];
                v_tile[e] = v[kv_base + j * HEAD_DIM + e % HEAD_DIM];
            }
        }
        workgroupBarrier();
        if in_range {
            // Scores of this tile, then one rescale of the running sums.
            var tile_max = -3.0e38;
            for (var j = 0u; j < TILE_K; j++) {
                let kj = t0 + j;
                if kj >= mine.x && kj < mine.y {
                    var dot = 0.0;
                    for (var d = 0u; d < HEAD_DIM; d++) {
                        dot += q_row[d] * k_tile[j * HEAD_DIM + d];
                    }
                    s[j] = dot;
                    tile_max = max(tile_max, dot);
                } else {
                    s[j] = -3.0e38;
                }
            }
            if tile_max > -3.0e38 {
                let m_new = max(m, tile_max);
                let correction = exp(m - m_new);
                l *= correction;
                for (var d = 0u; d < HEAD_DIM; d++) {
                    acc[d] *= correction;
                }
                for (var j = 0u; j < TILE_K; j++) {
                    if s[j] > -3.0e38 {
                        let p = exp(s[j] - m_new);
                        l += p;
                        for (var d = 0u; d < HEAD_DIM; d++) {
                            acc[d] += p * v_tile[j * HEAD_DIM + d];
                        }
                    }
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }

    if in_range {
        let o_base = (bh * params.tq + i) * HEAD_DIM;
        let inv = select(0.0, 1.0 / l, l > 0.0);
        for (var d = 0u; d < HEAD_DIM; d++) {
            out[o_base + d] = acc[d] * inv;
        }
    }
}
