//! Host-side beam search bookkeeping for one image, mirroring transformers 5.17
//! `GenerationMixin._beam_search` (generation/utils.py) with `early_stopping=False`,
//! `num_return_sequences=1`, one eos token and no sampling. All score arithmetic is f32 and in
//! the same order as the torch code, so that hypotheses rank identically.
//!
//! Correspondence (transformers 5.17 generation/utils.py):
//! - `_get_top_k_continuations` (l. 3238): the caller passes the top `2 * num_beams` candidates.
//! - `_get_running_beams_for_next_iteration` (l. 3292): [`BeamState::step`], part e.
//! - `_update_finished_beams` (l. 3314): [`BeamState::step`], part f.
//! - `_check_early_stop_heuristic` (l. 3169), `early_stopping == False` branch: part g.

/// The large negative constant HF adds to exclude entries (`-1.0e9`).
const EXCLUDED: f32 = -1.0e9;

/// One continuation: `score` is the accumulated log-probability if `token` extends running beam `beam`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub score: f32,
    pub beam: usize,
    pub token: u32,
}

/// A slot of the finished-hypotheses table (`sequences`, `beam_scores`, `is_sent_finished`).
#[derive(Debug, Clone, PartialEq)]
struct Hypothesis {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
}

/// Beam search state of one image (one batch row of HF's tensors).
#[derive(Debug, Clone)]
pub struct BeamState {
    num_beams: usize,
    prompt_len: usize,
    length_penalty: f64,
    /// `running_sequences`: `num_beams` sequences of the current length.
    running: Vec<Vec<u32>>,
    /// `running_beam_scores`.
    running_scores: Vec<f32>,
    /// `sequences` / `beam_scores` / `is_sent_finished`, best first.
    finished: Vec<Hypothesis>,
    /// `is_early_stop_heuristic_unsatisfied`: can a running beam still beat the finished ones?
    improvable: bool,
}

/// `(score, position)` order of `torch.topk`: larger score first; among equal scores the lower
/// position first.
fn descending(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| match (scores.get(a), scores.get(b)) {
        (Some(x), Some(y)) => y.total_cmp(x),
        _ => std::cmp::Ordering::Equal,
    });
    order
}

/// `n ** length_penalty` as Python computes it (double) and torch then applies to f32 tensors.
fn length_divisor(n: usize, length_penalty: f64) -> f32 {
    (n as f64).powf(length_penalty) as f32
}

impl BeamState {
    /// Every beam starts as `prompt`; only beam 0 is live (the others score `-1e9`).
    pub fn new(prompt: &[u32], num_beams: usize, length_penalty: f64) -> Self {
        let mut running_scores = vec![EXCLUDED; num_beams];
        if let Some(first) = running_scores.first_mut() {
            *first = 0.0;
        }
        Self {
            num_beams,
            prompt_len: prompt.len(),
            length_penalty,
            running: vec![prompt.to_vec(); num_beams],
            running_scores,
            finished: vec![
                Hypothesis {
                    tokens: prompt.to_vec(),
                    score: EXCLUDED,
                    finished: false
                };
                num_beams
            ],
            improvable: true,
        }
    }

    /// Accumulated log-probabilities of the running beams (added to the next step's log-probs).
    pub fn running_scores(&self) -> &[f32] {
        &self.running_scores
    }

    /// Last token of every running beam (the next decoder input).
    pub fn last_tokens(&self) -> Vec<u32> {
        self.running
            .iter()
            .map(|seq| seq.last().copied().unwrap_or_default())
            .collect()
    }

    /// Current length of the running sequences.
    pub fn cur_len(&self) -> usize {
        self.running.first().map_or(self.prompt_len, Vec::len)
    }

    /// False once no running beam can improve on the finished hypotheses: the result is final.
    pub fn is_improvable(&self) -> bool {
        self.improvable
    }

    /// The best finished hypothesis (the sequence `generate` returns), or the prompt if none yet.
    pub fn best(&self) -> &[u32] {
        self.finished
            .first()
            .map_or(&[][..], |h| h.tokens.as_slice())
    }

    /// Advances one token. `candidates` are the best `2 * num_beams` continuations over all
    /// running beams, best first (as `torch.topk` returns them). Returns, for each new running
    /// beam, the index of the old beam it extends (to reorder the KV cache with).
    pub fn step(&mut self, candidates: &[Candidate], eos: u32, max_length: usize) -> Vec<usize> {
        let k = self.num_beams;
        let cur_len = self.cur_len();
        let extend = |running: &[Vec<u32>], c: &Candidate| {
            let mut seq = running.get(c.beam).cloned().unwrap_or_default();
            seq.push(c.token);
            seq
        };
        // d. stopping criteria on each candidate: eos, or the sequence reaches max_length.
        let hits: Vec<bool> = candidates
            .iter()
            .map(|c| c.token == eos || cur_len + 1 >= max_length)
            .collect();

        // e. _get_running_beams_for_next_iteration: best `k` candidates that did not stop.
        let running_lp: Vec<f32> = candidates
            .iter()
            .zip(&hits)
            .map(|(c, &hit)| c.score + if hit { EXCLUDED } else { -0.0 })
            .collect();
        let chosen: Vec<usize> = descending(&running_lp).into_iter().take(k).collect();
        let new_running: Vec<Vec<u32>> = chosen
            .iter()
            .filter_map(|&j| candidates.get(j))
            .map(|c| extend(&self.running, c))
            .collect();
        let new_scores: Vec<f32> = chosen
            .iter()
            .filter_map(|&j| running_lp.get(j).copied())
            .collect();
        let sources: Vec<usize> = chosen
            .iter()
            .filter_map(|&j| candidates.get(j))
            .map(|c| c.beam)
            .collect();

        // f. _update_finished_beams: only the top `k` candidates may finish; scores are
        // length-normalised by the number of generated tokens (cur_len + 1 - prompt_len).
        let divisor = length_divisor(cur_len + 1 - self.prompt_len, self.length_penalty);
        let mut merged: Vec<Hypothesis> = self.finished.clone();
        for (j, (c, &hit)) in candidates.iter().zip(&hits).enumerate() {
            let just_finished = hit && j < k;
            let mut score = c.score / divisor;
            score += -0.0; // `beams_in_batch_are_full` is never set without early_stopping=True.
            if !self.improvable {
                score += EXCLUDED;
            }
            score += if just_finished { -0.0 } else { EXCLUDED };
            merged.push(Hypothesis {
                tokens: extend(&self.running, c),
                score,
                finished: just_finished,
            });
        }
        let merged_scores: Vec<f32> = merged.iter().map(|h| h.score).collect();
        self.finished = descending(&merged_scores)
            .into_iter()
            .take(k)
            .filter_map(|i| merged.get(i).cloned())
            .collect();

        self.running = new_running;
        self.running_scores = new_scores;

        // g. _check_early_stop_heuristic (early_stopping=False): the best running beam, normalised
        // at the current generated length, against the worst finished score.
        let generated = self.cur_len() - self.prompt_len;
        let best_possible = self.running_scores.first().copied().unwrap_or(EXCLUDED)
            / length_divisor(generated, self.length_penalty);
        let worst_finished = self
            .finished
            .iter()
            .map(|h| h.score)
            .fold(f32::INFINITY, f32::min);
        let can_improve = self
            .finished
            .iter()
            .any(|h| best_possible > if h.finished { worst_finished } else { EXCLUDED });
        self.improvable = self.improvable && can_improve;
        sources
    }
}

/// Merges per-beam top lists into the image's best `count` candidates over `beams x vocab`, in
/// `torch.topk` order (score descending, then flat index `beam * vocab + token` ascending).
/// `values[b]`/`tokens[b]` are beam `b`'s best entries (accumulated scores).
pub fn merge_beam_candidates(
    values: &[Vec<f32>],
    tokens: &[Vec<u32>],
    vocab_size: usize,
    count: usize,
) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = values
        .iter()
        .zip(tokens)
        .enumerate()
        .flat_map(|(beam, (vals, toks))| {
            vals.iter()
                .zip(toks)
                .map(move |(&score, &token)| Candidate { score, beam, token })
        })
        .collect();
    all.sort_by(|a, b| {
        b.score.total_cmp(&a.score).then(
            (a.beam * vocab_size + a.token as usize).cmp(&(b.beam * vocab_size + b.token as usize)),
        )
    });
    all.truncate(count);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(score: f32, beam: usize, token: u32) -> Candidate {
        Candidate { score, beam, token }
    }

    #[test]
    fn first_step_extends_beam_zero_and_tracks_sources() {
        let mut state = BeamState::new(&[30522], 2, 1.0);
        let cands = [
            cand(-0.5, 0, 7),
            cand(-1.0, 0, 8),
            cand(-2.0, 0, 9),
            cand(-3.0, 0, 10),
        ];
        let sources = state.step(&cands, 102, 20);
        assert_eq!(sources, vec![0, 0]);
        assert_eq!(state.last_tokens(), vec![7, 8]);
        assert_eq!(state.running_scores(), &[-0.5, -1.0]);
        assert!(state.is_improvable());
    }

    #[test]
    fn eos_in_top_beams_finishes_with_length_normalised_score() {
        let mut state = BeamState::new(&[30522, 5], 2, 1.0);
        state.step(
            &[
                cand(-1.0, 0, 7),
                cand(-2.0, 0, 8),
                cand(-3.0, 0, 9),
                cand(-4.0, 0, 10),
            ],
            102,
            20,
        );
        // eos ranked 1st finishes (score / 2 generated tokens); eos ranked 3rd (outside the top k) does not.
        let cands = [
            cand(-2.5, 1, 102),
            cand(-3.0, 0, 11),
            cand(-3.5, 0, 102),
            cand(-4.0, 1, 12),
        ];
        let sources = state.step(&cands, 102, 20);
        assert_eq!(state.best(), &[30522, 5, 8, 102]);
        assert_eq!(state.finished[0].score, -1.25);
        assert!(state.finished[0].finished);
        assert!(!state.finished[1].finished);
        // running beams skip the eos candidates
        assert_eq!(sources, vec![0, 1]);
        assert_eq!(state.last_tokens(), vec![11, 12]);
        assert!(
            state.is_improvable(),
            "only one slot finished: heuristic stays unsatisfied"
        );
    }

    #[test]
    fn heuristic_stops_when_running_cannot_beat_worst_finished() {
        let mut state = BeamState::new(&[1], 2, 1.0);
        state.step(
            &[
                cand(-0.1, 0, 7),
                cand(-0.2, 0, 8),
                cand(-5.0, 0, 9),
                cand(-6.0, 0, 10),
            ],
            102,
            20,
        );
        // both top candidates are eos: two finished hypotheses at -0.15 and -0.25 (2 generated tokens)
        state.step(
            &[
                cand(-0.3, 0, 102),
                cand(-0.5, 1, 102),
                cand(-9.0, 0, 3),
                cand(-9.5, 1, 4),
            ],
            102,
            20,
        );
        assert!(state.finished.iter().all(|h| h.finished));
        // best running -9.0 / 2 = -4.5 < worst finished -0.25 -> done
        assert!(!state.is_improvable());
        assert_eq!(state.best(), &[1, 7, 102]);
    }

    #[test]
    fn max_length_finishes_the_top_beams() {
        let mut state = BeamState::new(&[1], 2, 1.0);
        let cands = [
            cand(-1.0, 0, 7),
            cand(-2.0, 0, 8),
            cand(-3.0, 0, 9),
            cand(-4.0, 0, 10),
        ];
        state.step(&cands, 102, 2);
        assert_eq!(state.best(), &[1, 7]);
        assert_eq!(state.finished[1].tokens, vec![1, 8]);
        assert!(state.finished[1].finished);
    }

    #[test]
    fn length_penalty_changes_the_ranking() {
        // same two finished hypotheses scored with length_penalty 0 (raw sums) vs 2 (long favoured)
        for (lp, expected_best) in [(0.0, vec![1, 102]), (2.0, vec![1, 7, 8, 102])] {
            let mut state = BeamState::new(&[1], 2, lp);
            state.step(
                &[
                    cand(-1.0, 0, 102),
                    cand(-1.1, 0, 7),
                    cand(-1.2, 0, 8),
                    cand(-5.0, 0, 9),
                ],
                102,
                20,
            );
            state.step(
                &[
                    cand(-1.3, 0, 8),
                    cand(-1.6, 1, 8),
                    cand(-7.0, 0, 9),
                    cand(-8.0, 1, 9),
                ],
                102,
                20,
            );
            state.step(
                &[
                    cand(-1.5, 0, 102),
                    cand(-2.0, 1, 102),
                    cand(-9.0, 0, 3),
                    cand(-9.5, 1, 3),
                ],
                102,
                20,
            );
            assert_eq!(
                state.best(),
                expected_best.as_slice(),
                "length_penalty {lp}"
            );
        }
    }

    #[test]
    fn merge_orders_by_score_then_flat_index() {
        let values = vec![vec![-1.0, -3.0], vec![-1.0, -2.0]];
        let tokens = vec![vec![5, 6], vec![2, 9]];
        let merged = merge_beam_candidates(&values, &tokens, 10, 3);
        assert_eq!(
            merged,
            vec![cand(-1.0, 0, 5), cand(-1.0, 1, 2), cand(-2.0, 1, 9)]
        );
    }
}
