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
//
// Tiling (FlashAttention-2 style): a workgroup owns BR query rows and walks the key tiles of BC
// keys that its rows may see; masked tiles are skipped by the loop bounds, never scored. Each
// row is served by PER_ROW invocations. Per tile:
//   1. the tile's keys and values are staged in workgroup memory (as vec4s);
//   2. each invocation scores BC / PER_ROW keys of its row (vec4 dot products) into `s_tile`;
//   3. each invocation reads its row's scores, updates the running max and turns its own scores
//      into probabilities in `p_tile`;
//   4. each invocation rescales its share (D4 / PER_ROW vec4s) of the row's output and adds the
//      tile's probability-weighted values; the normaliser is kept alongside.
// No score matrix larger than BR x BC exists anywhere.
//
// Layout: q [BH, Tq, D], k and v [BH, Tk, D], out [BH, Tq, D], f32, contiguous (any D: rows
// are read as vec4s padded with zeros). The host substitutes the sizes in double braces per head
// dimension, keeping workgroup memory within WebGPU's default 16 KiB.

const D: u32 = {{head_dim}}u;
const D4: u32 = {{head_dim4}}u;
const BR: u32 = {{block_rows}}u;
const BC: u32 = {{block_keys}}u;
const PER_ROW: u32 = {{per_row}}u;
const WG: u32 = {{wg_size}}u;
const S_PER: u32 = {{scores_per_invocation}}u;
const O_PER: u32 = {{outputs_per_invocation}}u;
const NEG: f32 = -3.0e38;

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

var<workgroup> q_tile: array<vec4<f32>, {{q_elems}}>;
var<workgroup> k_tile: array<vec4<f32>, {{kv_elems}}>;
var<workgroup> v_tile: array<vec4<f32>, {{kv_elems}}>;
var<workgroup> s_tile: array<f32, {{s_elems}}>;
var<workgroup> p_tile: array<f32, {{s_elems}}>;
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

// Elements [4 * c, 4 * c + 4) of the D-long row starting at `base`, zero past D.
fn q4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, q[base + min(e, D - 1u)], e < D),
        select(0.0, q[base + min(e + 1u, D - 1u)], e + 1u < D),
        select(0.0, q[base + min(e + 2u, D - 1u)], e + 2u < D),
        select(0.0, q[base + min(e + 3u, D - 1u)], e + 3u < D),
    );
}

fn k4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, k[base + min(e, D - 1u)], e < D),
        select(0.0, k[base + min(e + 1u, D - 1u)], e + 1u < D),
        select(0.0, k[base + min(e + 2u, D - 1u)], e + 2u < D),
        select(0.0, k[base + min(e + 3u, D - 1u)], e + 3u < D),
    );
}

fn v4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, v[base + min(e, D - 1u)], e < D),
        select(0.0, v[base + min(e + 1u, D - 1u)], e + 1u < D),
        select(0.0, v[base + min(e + 2u, D - 1u)], e + 2u < D),
        select(0.0, v[base + min(e + 3u, D - 1u)], e + 3u < D),
    );
}

@compute @workgroup_size({{wg_size}})
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bh = wg.y;
    let row0 = wg.x * BR;
    let r = lid / PER_ROW;
    let u = lid % PER_ROW;
    let i = row0 + r;
    let in_range = i < params.tq;
    let last_row = params.tq - 1u;

    // The workgroup's key range: the union of its rows' ranges (rows are consecutive, and
    // every mode's range moves monotonically with the row).
    if lid == 0u {
        range_lo = key_range(row0).x;
        range_hi = key_range(min(row0 + BR, params.tq) - 1u).y;
    }
    let lo = workgroupUniformLoad(&range_lo);
    let hi = workgroupUniformLoad(&range_hi);
    let mine = key_range(min(i, last_row));

    // Stage the workgroup's query rows, pre-scaled (rows past the end repeat the last one).
    for (var e = lid; e < BR * D4; e += WG) {
        let row = min(row0 + e / D4, last_row);
        q_tile[e] = q4((bh * params.tq + row) * D, e % D4) * params.scale;
    }

    var o: array<vec4<f32>, O_PER>;
    for (var c = 0u; c < O_PER; c++) {
        o[c] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;

    let kv_base = bh * params.tk;
    for (var t0 = lo; t0 < hi; t0 += BC) {
        // 1. Stage BC keys and values; past `hi`, zeros (never NaN times a zero weight).
        for (var e = lid; e < BC * D4; e += WG) {
            let j = t0 + e / D4;
            if j < hi {
                k_tile[e] = k4((kv_base + j) * D, e % D4);
                v_tile[e] = v4((kv_base + j) * D, e % D4);
            } else {
                k_tile[e] = vec4<f32>(0.0);
                v_tile[e] = vec4<f32>(0.0);
            }
        }
        workgroupBarrier();

        // 2. Scores of keys u, u + PER_ROW, ... of this tile for row r.
        var s: array<f32, S_PER>;
        for (var x = 0u; x < S_PER; x++) {
            s[x] = 0.0;
        }
        for (var c = 0u; c < D4; c++) {
            let qc = q_tile[r * D4 + c];
            for (var x = 0u; x < S_PER; x++) {
                s[x] += dot(qc, k_tile[(u + x * PER_ROW) * D4 + c]);
            }
        }
        for (var x = 0u; x < S_PER; x++) {
            let j = t0 + u + x * PER_ROW;
            let visible = j >= mine.x && j < mine.y;
            s_tile[r * BC + u + x * PER_ROW] = select(NEG, s[x], visible);
        }
        workgroupBarrier();

        // 3. The row's new running max; this invocation's probabilities.
        var tile_max = NEG;
        for (var c = 0u; c < BC; c++) {
            tile_max = max(tile_max, s_tile[r * BC + c]);
        }
        let m_new = max(m, tile_max);
        let correction = select(1.0, exp(m - m_new), tile_max > NEG);
        for (var x = 0u; x < S_PER; x++) {
            let sx = s_tile[r * BC + u + x * PER_ROW];
            p_tile[r * BC + u + x * PER_ROW] = select(0.0, exp(sx - m_new), sx > NEG);
        }
        workgroupBarrier();

        // 4. Rescale and accumulate this invocation's share of the row's output.
        var row_sum = 0.0;
        for (var c = 0u; c < O_PER; c++) {
            o[c] *= correction;
        }
        for (var j = 0u; j < BC; j++) {
            let p = p_tile[r * BC + j];
            row_sum += p;
            for (var c = 0u; c < O_PER; c++) {
                let d4 = min(u + c * PER_ROW, D4 - 1u);
                o[c] += p * v_tile[j * D4 + d4];
            }
        }
        l = l * correction + row_sum;
        m = m_new;
        workgroupBarrier();
    }

    if in_range {
        let o_base = (bh * params.tq + i) * D;
        let inv = select(0.0, 1.0 / l, l > 0.0);
        for (var c = 0u; c < O_PER; c++) {
            let d4 = u + c * PER_ROW;
            if d4 < D4 {
                let y = o[c] * inv;
                for (var e = 0u; e < 4u; e++) {
                    if 4u * d4 + e < D {
                        out[o_base + 4u * d4 + e] = y[e];
                    }
                }
            }
        }
    }
}
