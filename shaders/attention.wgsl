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
// Tiling (FlashAttention-2 style, register-tiled like a GEMM): a workgroup of WG invocations
// owns BR query rows and walks the key tiles of BC keys that its rows may see; masked tiles are
// skipped by the loop bounds, never scored. Per tile:
//   1. the tile's keys and values are staged in workgroup memory (as vec4s);
//   2. S = Q K^T: each invocation computes a TM x TN block of scores in registers, so every
//      vec4 it loads serves TM (or TN) dot products, and each of its rows' maxima over its TN
//      keys;
//   3. one invocation per row combines those into the row's new running max and rescaling
//      factor; the score blocks, still in registers, become probabilities in `s_tile`;
//   4. O = corr * O + P V: each invocation owns TO rows x OC vec4 columns of the output, so
//      every value vec4 it loads serves TO rows; it keeps its rows' normalisers alongside.
// No score matrix larger than BR x BC exists anywhere.
//
// Layout: q [BH, Tq, D], k and v [BH, Tk, D], out [BH, Tq, D], contiguous, f32 or f16 (then
// converted to f32 on load: all arithmetic is f32); any D: rows are read as vec4s padded with
// zeros. The host substitutes the sizes in double braces per head
// dimension, keeping workgroup memory within WebGPU's default 16 KiB.

{{enable}}
const D: u32 = {{head_dim}}u;
const D4: u32 = {{head_dim4}}u;
const BR: u32 = {{block_rows}}u;
const BC: u32 = {{block_keys}}u;
const WG: u32 = {{wg_size}}u;
const TM: u32 = {{score_rows}}u;
const TN: u32 = {{score_keys}}u;
const KB: u32 = BC / TN;
const TO: u32 = {{out_rows}}u;
const OP: u32 = {{out_per_rows}}u;
const OC: u32 = {{out_cols}}u;
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
@group(0) @binding(0) var<storage, read_write> q: array<{{elem}}>;
@group(0) @binding(1) var<storage, read_write> k: array<{{elem}}>;
@group(0) @binding(2) var<storage, read_write> v: array<{{elem}}>;
@group(0) @binding(3) var<storage, read_write> out: array<{{elem}}>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> q_tile: array<vec4<f32>, {{q_elems}}>;
var<workgroup> k_tile: array<vec4<f32>, {{kv_elems}}>;
var<workgroup> v_tile: array<vec4<f32>, {{kv_elems}}>;
var<workgroup> s_tile: array<f32, {{s_elems}}>;
var<workgroup> part_max: array<f32, {{part_max_elems}}>;
var<workgroup> m_row: array<f32, {{block_rows}}>;
var<workgroup> corr: array<f32, {{block_rows}}>;
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
        select(0.0, f32(q[base + min(e, D - 1u)]), e < D),
        select(0.0, f32(q[base + min(e + 1u, D - 1u)]), e + 1u < D),
        select(0.0, f32(q[base + min(e + 2u, D - 1u)]), e + 2u < D),
        select(0.0, f32(q[base + min(e + 3u, D - 1u)]), e + 3u < D),
    );
}

fn k4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, f32(k[base + min(e, D - 1u)]), e < D),
        select(0.0, f32(k[base + min(e + 1u, D - 1u)]), e + 1u < D),
        select(0.0, f32(k[base + min(e + 2u, D - 1u)]), e + 2u < D),
        select(0.0, f32(k[base + min(e + 3u, D - 1u)]), e + 3u < D),
    );
}

fn v4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, f32(v[base + min(e, D - 1u)]), e < D),
        select(0.0, f32(v[base + min(e + 1u, D - 1u)]), e + 1u < D),
        select(0.0, f32(v[base + min(e + 2u, D - 1u)]), e + 2u < D),
        select(0.0, f32(v[base + min(e + 3u, D - 1u)]), e + 3u < D),
    );
}

@compute @workgroup_size({{wg_size}})
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bh = wg.y;
    let row0 = wg.x * BR;
    let last_row = params.tq - 1u;

    // The workgroup's key range: the union of its rows' ranges (rows are consecutive, and
    // every mode's range moves monotonically with the row).
    if lid == 0u {
        range_lo = key_range(row0).x;
        range_hi = key_range(min(row0 + BR, params.tq) - 1u).y;
    }
    let lo = workgroupUniformLoad(&range_lo);
    let hi = workgroupUniformLoad(&range_hi);

    // Stage the workgroup's query rows, pre-scaled (rows past the end repeat the last one).
    for (var e = lid; e < BR * D4; e += WG) {
        let row = min(row0 + e / D4, last_row);
        q_tile[e] = q4((bh * params.tq + row) * D, e % D4) * params.scale;
    }

    // This invocation's parts: a TM x TN score block (and its rows' visible keys), TO rows x
    // OC vec4 columns of the output.
    let s_row = (lid / KB) * TM;
    let s_key = (lid % KB) * TN;
    var s_range: array<vec2<u32>, TM>;
    for (var a = 0u; a < TM; a++) {
        s_range[a] = key_range(min(row0 + s_row + a, last_row));
    }
    let o_row = (lid / OP) * TO;
    let o_col = lid % OP;

    var o: array<vec4<f32>, {{out_regs}}>;
    var l: array<f32, TO>;
    for (var x = 0u; x < TO * OC; x++) {
        o[x] = vec4<f32>(0.0);
    }
    for (var a = 0u; a < TO; a++) {
        l[a] = 0.0;
    }
    if lid < BR {
        m_row[lid] = NEG;
    }

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

        // 2. A TM x TN block of scores (masked ones NEG), kept in registers; each row's
        //    maximum over these TN keys goes to `part_max`.
        var s: array<f32, {{score_regs}}>;
        for (var x = 0u; x < TM * TN; x++) {
            s[x] = 0.0;
        }
        for (var c = 0u; c < D4; c++) {
            var qr: array<vec4<f32>, TM>;
            for (var a = 0u; a < TM; a++) {
                qr[a] = q_tile[(s_row + a) * D4 + c];
            }
            for (var b = 0u; b < TN; b++) {
                let kc = k_tile[(s_key + b) * D4 + c];
                for (var a = 0u; a < TM; a++) {
                    s[a * TN + b] += dot(qr[a], kc);
                }
            }
        }
        for (var a = 0u; a < TM; a++) {
            var row_max = NEG;
            for (var b = 0u; b < TN; b++) {
                let j = t0 + s_key + b;
                let visible = j >= s_range[a].x && j < s_range[a].y;
                s[a * TN + b] = select(NEG, s[a * TN + b], visible);
                row_max = max(row_max, s[a * TN + b]);
            }
            part_max[(s_row + a) * KB + s_key / TN] = row_max;
        }
        workgroupBarrier();

        // 3. Each row's new running maximum and rescaling factor, one invocation per row;
        //    then every score becomes a probability against its row's maximum.
        if lid < BR {
            var tile_max = NEG;
            for (var x = 0u; x < KB; x++) {
                tile_max = max(tile_max, part_max[lid * KB + x]);
            }
            let m_old = m_row[lid];
            let m_new = max(m_old, tile_max);
            corr[lid] = exp(m_old - m_new);
            m_row[lid] = m_new;
        }
        workgroupBarrier();
        for (var a = 0u; a < TM; a++) {
            let m_new = m_row[s_row + a];
            for (var b = 0u; b < TN; b++) {
                let sx = s[a * TN + b];
                s_tile[(s_row + a) * BC + s_key + b] = select(0.0, exp(sx - m_new), sx > NEG);
            }
        }
        workgroupBarrier();

        // 4. Rescale and accumulate TO rows x OC vec4 columns of the output.
        for (var a = 0u; a < TO; a++) {
            let f = corr[o_row + a];
            l[a] *= f;
            for (var c = 0u; c < OC; c++) {
                o[a * OC + c] *= f;
            }
        }
        for (var j = 0u; j < BC; j++) {
            var vr: array<vec4<f32>, OC>;
            for (var c = 0u; c < OC; c++) {
                vr[c] = v_tile[j * D4 + min(o_col + c * OP, D4 - 1u)];
            }
            for (var a = 0u; a < TO; a++) {
                let pj = s_tile[(o_row + a) * BC + j];
                l[a] += pj;
                for (var c = 0u; c < OC; c++) {
                    o[a * OC + c] += pj * vr[c];
                }
            }
        }
        workgroupBarrier();
    }

    for (var a = 0u; a < TO; a++) {
        let i = row0 + o_row + a;
        if i < params.tq {
            let o_base = (bh * params.tq + i) * D;
            let inv = select(0.0, 1.0 / l[a], l[a] > 0.0);
            for (var c = 0u; c < OC; c++) {
                let d4 = o_col + c * OP;
                if d4 < D4 {
                    let y = o[a * OC + c] * inv;
                    for (var e = 0u; e < 4u; e++) {
                        if 4u * d4 + e < D {
                            out[o_base + 4u * d4 + e] = {{elem}}(y[e]);
                        }
                    }
                }
            }
        }
    }
}
