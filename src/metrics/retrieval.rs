//! Image-text retrieval evaluation as LAVIS computes it (`RetrievalTask.compute_sim_matrix` and
//! `itm_eval`, the `eval_ret_coco.sh` / `eval_ret_flickr.sh` numbers):
//!
//! 1. the ITC similarity matrix, images x texts (cosine of the normalised projections);
//! 2. [`rerank`]: for every row (an image, or a text of the transposed matrix) the `k_test` most
//!    similar columns are re-scored as `ITM match logit + ITC similarity`, every other entry is
//!    -100;
//! 3. [`recall`]: image -> text rank = the best rank among the image's captions, text -> image rank =
//!    the rank of its image; recall@1/5/10 in percent, their means, `r_mean` and `agg_metrics`
//!    (LAVIS: the text-retrieval mean).
//!
//! Ties. `torch.topk` does not define which of equal scores it keeps: [`top_k`] keeps the lower
//! index. LAVIS ranks with `np.argsort(score)[::-1]`; on equal scores numpy's stable sort reversed
//! puts the HIGHER index first, which [`rank_of`] reproduces (it matters for the -100 entries).

use serde::{Deserialize, Serialize};

/// The score LAVIS gives the entries outside a row's top `k_test`.
pub const OUTSIDE_TOP_K: f32 = -100.0;

/// Recall@K of both directions, in percent, with LAVIS's key names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Image -> text (text retrieval) recall@1, @5, @10.
    pub txt_r1: f64,
    pub txt_r5: f64,
    pub txt_r10: f64,
    pub txt_r_mean: f64,
    /// Text -> image (image retrieval) recall@1, @5, @10.
    pub img_r1: f64,
    pub img_r5: f64,
    pub img_r10: f64,
    pub img_r_mean: f64,
    /// Mean of the two means.
    pub r_mean: f64,
    /// LAVIS's model-selection value: the mean of txt_r1, txt_r5, txt_r10.
    pub agg_metrics: f64,
}

/// The indices of the `k` largest values of `row` (all of them when `k >= row.len()`), largest
/// first; equal values: the lower index first.
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(k.min(row.len()));
    order
}

/// LAVIS's re-ranking of one direction: `sims` is rows x columns (images x texts for image ->
/// text, texts x images for text -> image); for each row `r` the top `k_test` columns are scored
/// by `itm(r, &columns)` (one ITM match logit per column, in that order) plus their similarity;
/// the other entries are [`OUTSIDE_TOP_K`]. `itm` is called once per row.
pub fn rerank<E>(
    sims: &[Vec<f32>],
    k_test: usize,
    mut itm: impl FnMut(usize, &[usize]) -> Result<Vec<f32>, E>,
) -> Result<Vec<Vec<f32>>, E> {
    let mut out = Vec::with_capacity(sims.len());
    for (r, row) in sims.iter().enumerate() {
        let columns = top_k(row, k_test);
        let logits = itm(r, &columns)?;
        let mut scores = vec![OUTSIDE_TOP_K; row.len()];
        for (&c, logit) in columns.iter().zip(logits) {
            scores[c] = logit + row[c];
        }
        out.push(scores);
    }
    Ok(out)
}

/// The transpose of a rectangular matrix.
pub fn transpose(matrix: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let columns = matrix.first().map_or(0, Vec::len);
    (0..columns)
        .map(|c| matrix.iter().map(|row| row[c]).collect())
        .collect()
}

/// The 0-based position of column `target` when `row` is sorted as `np.argsort(row)[::-1]`
/// (descending; equal values: the higher index first).
pub fn rank_of(row: &[f32], target: usize) -> usize {
    let t = row[target];
    row.iter()
        .enumerate()
        .filter(|&(j, &s)| s > t || (s == t && j > target))
        .count()
}

/// Image -> text ranks (best caption of each image) and text -> image ranks.
pub fn ranks(
    i2t: &[Vec<f32>],
    t2i: &[Vec<f32>],
    img2txt: &[Vec<usize>],
    txt2img: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    let image_ranks = i2t
        .iter()
        .zip(img2txt)
        .map(|(row, texts)| {
            texts
                .iter()
                .map(|&t| rank_of(row, t))
                .min()
                .unwrap_or(usize::MAX)
        })
        .collect();
    let text_ranks = t2i
        .iter()
        .zip(txt2img)
        .map(|(row, &image)| rank_of(row, image))
        .collect();
    (image_ranks, text_ranks)
}

/// LAVIS `itm_eval`: recall@1/5/10 both ways from the re-ranked matrices.
pub fn recall(
    i2t: &[Vec<f32>],
    t2i: &[Vec<f32>],
    img2txt: &[Vec<usize>],
    txt2img: &[usize],
) -> RetrievalMetrics {
    let (image_ranks, text_ranks) = ranks(i2t, t2i, img2txt, txt2img);
    let at = |ranks: &[usize], k: usize| {
        if ranks.is_empty() {
            return 0.0;
        }
        100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
    };
    let (tr1, tr5, tr10) = (
        at(&image_ranks, 1),
        at(&image_ranks, 5),
        at(&image_ranks, 10),
    );
    let (ir1, ir5, ir10) = (at(&text_ranks, 1), at(&text_ranks, 5), at(&text_ranks, 10));
    let tr_mean = (tr1 + tr5 + tr10) / 3.0;
    let ir_mean = (ir1 + ir5 + ir10) / 3.0;
    RetrievalMetrics {
        txt_r1: tr1,
        txt_r5: tr5,
        txt_r10: tr10,
        txt_r_mean: tr_mean,
        img_r1: ir1,
        img_r5: ir5,
        img_r10: ir10,
        img_r_mean: ir_mean,
        r_mean: (tr_mean + ir_mean) / 2.0,
        agg_metrics: tr_mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_and_the_lower_index_on_ties() {
        assert_eq!(top_k(&[0.1, 0.5, 0.3, 0.5], 2), vec![1, 3]);
        assert_eq!(top_k(&[0.1, 0.5, 0.3], 10), vec![1, 2, 0]);
    }

    #[test]
    fn ranks_break_ties_like_numpy_argsort_reversed() {
        // descending order of [-100, 2, -100, -100]: 1, then the -100s from the highest index.
        let row = [-100.0, 2.0, -100.0, -100.0];
        assert_eq!(rank_of(&row, 1), 0);
        assert_eq!(rank_of(&row, 3), 1);
        assert_eq!(rank_of(&row, 2), 2);
        assert_eq!(rank_of(&row, 0), 3);
    }

    #[test]
    fn rerank_adds_the_itm_logit_to_the_top_k_and_sets_the_rest() {
        let sims = vec![vec![0.9, 0.1, 0.5], vec![0.2, 0.8, 0.3]];
        let mut calls = Vec::new();
        let scores = rerank(&sims, 2, |r, cols: &[usize]| {
            calls.push((r, cols.to_vec()));
            Ok::<_, ()>(cols.iter().map(|&c| 10.0 * c as f32).collect())
        })
        .unwrap();
        assert_eq!(calls, vec![(0, vec![0, 2]), (1, vec![1, 2])]);
        assert_eq!(scores[0], vec![0.9, OUTSIDE_TOP_K, 20.5]);
        assert_eq!(scores[1], vec![OUTSIDE_TOP_K, 10.8, 20.3]);
    }

    /// 3 images with 2 captions each (texts 0-1 of image 0, 2-3 of image 1, 4-5 of image 2); the
    /// ranks are worked out by hand in the comments.
    #[test]
    fn recall_on_a_hand_checked_matrix() {
        let img2txt = vec![vec![0, 1], vec![2, 3], vec![4, 5]];
        let txt2img = vec![0, 0, 1, 1, 2, 2];
        let i2t = vec![
            // image 0: text 1 is first -> rank 0
            vec![0.5, 0.9, 0.1, 0.2, 0.3, 0.4],
            // image 1: order 0 (0.9), 1 (0.8), 3 (0.7) -> best caption 3 at rank 2
            vec![0.9, 0.8, 0.1, 0.7, 0.2, 0.3],
            // image 2: descending order is 0, 1, 2, 3, 4, 5 -> caption 4 at rank 4
            vec![0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
        ];
        let t2i = vec![
            vec![0.9, 0.1, 0.2], // text 0 -> image 0 rank 0
            vec![0.1, 0.9, 0.2], // text 1 -> image 0 rank 2
            vec![0.1, 0.9, 0.2], // text 2 -> image 1 rank 0
            vec![0.5, 0.4, 0.3], // text 3 -> image 1 rank 1
            vec![0.1, 0.2, 0.9], // text 4 -> image 2 rank 0
            // text 5 -> image 2: all -100, the highest index first -> rank 0
            vec![OUTSIDE_TOP_K, OUTSIDE_TOP_K, OUTSIDE_TOP_K],
        ];
        let (image_ranks, text_ranks) = ranks(&i2t, &t2i, &img2txt, &txt2img);
        assert_eq!(image_ranks, vec![0, 2, 4]);
        assert_eq!(text_ranks, vec![0, 2, 0, 1, 0, 0]);
        let m = recall(&i2t, &t2i, &img2txt, &txt2img);
        let third = 100.0 / 3.0;
        assert!((m.txt_r1 - third).abs() < 1e-9, "{m:?}");
        assert_eq!(m.txt_r5, 100.0);
        assert_eq!(m.txt_r10, 100.0);
        assert!((m.img_r1 - 4.0 * 100.0 / 6.0).abs() < 1e-9, "{m:?}");
        assert!((m.img_r5 - 100.0).abs() < 1e-9);
        let tr_mean = (third + 200.0) / 3.0;
        assert!((m.txt_r_mean - tr_mean).abs() < 1e-9);
        assert!((m.agg_metrics - tr_mean).abs() < 1e-9);
        let ir_mean = (4.0 * 100.0 / 6.0 + 200.0) / 3.0;
        assert!((m.r_mean - (tr_mean + ir_mean) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let m = vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]];
        assert_eq!(
            transpose(&m),
            vec![vec![1.0, 4.0], vec![2.0, 5.0], vec![3.0, 6.0]]
        );
    }
}
