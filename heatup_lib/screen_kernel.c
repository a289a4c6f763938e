/* One pass of the bfloat16 screen over a tile of a similarity block (see heatup_lib/screen.py).
 *
 * The tile holds t gallery rows by w query columns of bfloat16 similarities, read as int16 bit
 * patterns. Positive bfloat16 numbers are ordered as those patterns; every threshold passed here
 * is the pattern of a positive number, or -32768 ("take everything") for the cut, so negative
 * entries (negative int16) fall below every threshold except that one. Per query column c:
 *
 *   n_surely[c]   += number of entries >= th_surely[c]
 *   n_possibly[c] += number of entries >= th_possibly[c]
 *   every entry >= cut[c] is appended, with its gallery row t0 + r, to the column's candidate
 *   buffer (buf_v, buf_j; fill[c] used of cap); run[c] (k entries, ascending) keeps the k
 *   largest entries taken so far, and cut[c] = table[run[c][0] + 32768] follows it up. A full
 *   buffer drops its entries below the current cut; if none can go, the column is marked blind
 *   (its candidates are incomplete) and takes nothing more.
 *
 * The cut only rises, so an entry skipped below it lies below the final cut as well: the final
 * candidates (buffer entries >= the final cut) are every entry of the tile stream >= that cut.
 *
 * With k = 0 the cut is fixed: every entry in the band cut[c] <= v < th_surely[c] is taken, and a
 * column whose buffer fills is marked blind.
 */
#include <stdint.h>
#include <string.h>
#ifdef __AVX512BW__
#include <immintrin.h>
#endif

#define MAX_WIDTH 4096
#define TAKE_NOTHING 32767

static void take(int64_t c, int16_t v, int32_t j, int16_t *run, int64_t k, int16_t *cut, const int16_t *table,
                 int16_t *buf_v, int32_t *buf_j, int64_t cap, int32_t *fill, uint8_t *blind, int16_t below) {
    int16_t *bv = buf_v + c * cap;
    int32_t *bj = buf_j + c * cap;
    if (k == 0) { /* a fixed band: cut <= v < below, and nothing to drop */
        if (v >= below) return;
        if (fill[c] == cap) { blind[c] = 1; cut[c] = TAKE_NOTHING; return; }
        bv[fill[c]] = v; bj[fill[c]] = j; fill[c]++;
        return;
    }
    if (fill[c] == cap) { /* drop what the cut has passed */
        int64_t kept = 0;
        for (int64_t s = 0; s < cap; s++)
            if (bv[s] >= cut[c]) { bv[kept] = bv[s]; bj[kept] = bj[s]; kept++; }
        fill[c] = (int32_t)kept;
        if (kept == cap) { blind[c] = 1; cut[c] = TAKE_NOTHING; return; }
    }
    bv[fill[c]] = v;
    bj[fill[c]] = j;
    fill[c]++;
    int16_t *rc = run + c * k;
    if (v > rc[0]) { /* insert into the ascending k largest, dropping the smallest */
        int64_t s = 0;
        while (s + 1 < k && rc[s + 1] < v) { rc[s] = rc[s + 1]; s++; }
        rc[s] = v;
        cut[c] = table[(int32_t)rc[0] + 32768];
    }
}

int screen_tile(const int16_t *tile, int64_t t, int64_t w, int64_t t0,
                const int16_t *th_surely, const int16_t *th_possibly, int32_t *n_surely, int32_t *n_possibly,
                int16_t *run, int64_t k, int16_t *cut, const int16_t *table,
                int16_t *buf_v, int32_t *buf_j, int64_t cap, int32_t *fill, uint8_t *blind) {
    if (w > MAX_WIDTH || w % 32 || t >= 32768 || k < 0 || cap < k) return -1;
    int16_t acc_s[MAX_WIDTH] __attribute__((aligned(64)));
    int16_t acc_p[MAX_WIDTH] __attribute__((aligned(64)));
    memset(acc_s, 0, (size_t)w * 2);
    memset(acc_p, 0, (size_t)w * 2);
    for (int64_t r = 0; r < t; r++) {
        const int16_t *row = tile + r * w;
#ifdef __AVX512BW__
        const __m512i one = _mm512_set1_epi16(1);
        for (int64_t c0 = 0; c0 < w; c0 += 32) {
            __m512i x = _mm512_loadu_si512(row + c0);
            __m512i a = _mm512_load_si512(acc_s + c0), b = _mm512_load_si512(acc_p + c0);
            a = _mm512_mask_add_epi16(a, _mm512_cmpge_epi16_mask(x, _mm512_loadu_si512(th_surely + c0)), a, one);
            b = _mm512_mask_add_epi16(b, _mm512_cmpge_epi16_mask(x, _mm512_loadu_si512(th_possibly + c0)), b, one);
            _mm512_store_si512(acc_s + c0, a);
            _mm512_store_si512(acc_p + c0, b);
            uint32_t hit = _mm512_cmpge_epi16_mask(x, _mm512_loadu_si512(cut + c0));
            while (hit) {
                int64_t c = c0 + __builtin_ctz(hit);
                hit &= hit - 1;
                take(c, row[c], (int32_t)(t0 + r), run, k, cut, table, buf_v, buf_j, cap, fill, blind, th_surely[c]);
            }
        }
#else
        for (int64_t c = 0; c < w; c++) {
            acc_s[c] += row[c] >= th_surely[c];
            acc_p[c] += row[c] >= th_possibly[c];
        }
        for (int64_t c = 0; c < w; c++)
            if (row[c] >= cut[c])
                take(c, row[c], (int32_t)(t0 + r), run, k, cut, table, buf_v, buf_j, cap, fill, blind, th_surely[c]);
#endif
    }
    for (int64_t c = 0; c < w; c++) {
        n_surely[c] += acc_s[c];
        n_possibly[c] += acc_p[c];
    }
    return 0;
}

/* out[i] = x[rows[i]] . x[cols[i]] for float32 rows of length d, accumulated in float64: each
 * product of two float32 numbers is exact in float64, and the sum runs in 8 lanes (lane l takes the
 * terms l, l + 8, ...) added up in a fixed order, so a pair gets the same value wherever it sits. */
void pair_dots(const float *x, int64_t d, const int64_t *rows, const int64_t *cols, int64_t n, double *out) {
    for (int64_t i = 0; i < n; i++) {
        const float *a = x + rows[i] * d, *b = x + cols[i] * d;
        double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t k = 0;
        for (; k + 8 <= d; k += 8)
            for (int l = 0; l < 8; l++) lane[l] += (double)a[k + l] * (double)b[k + l];
        for (int l = 0; k + l < d; l++) lane[l] += (double)a[k + l] * (double)b[k + l];
        out[i] = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    }
}
