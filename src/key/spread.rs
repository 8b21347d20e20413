//! A view of a request body as the key memo reads it: one slice, or the
//! pieces hyper handed over, in order, so a repeat is sampled and compared
//! without joining them.

use bytes::Bytes;

/// The longest run of bytes [`Spread::with`] hands over as one slice: the
/// memo's whole-body sample (a stack buffer this long is filled when a run
/// straddles pieces).
pub(super) const MAX_RUN: usize = 264;

/// A body's bytes: one slice, or pieces in order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Spread<'a> {
    One(&'a [u8]),
    Pieces(&'a [Bytes]),
}

impl Spread<'_> {
    pub(super) fn len(self) -> usize {
        match self {
            Spread::One(bytes) => bytes.len(),
            Spread::Pieces(pieces) => pieces.iter().map(Bytes::len).sum(),
        }
    }

    /// Calls `f` with the `n` bytes at `start` (at most [`MAX_RUN`] of
    /// them) as one slice: borrowed when they lie in one piece, copied
    /// into a buffer on the stack when they straddle two.
    pub(super) fn with(self, start: usize, n: usize, f: impl FnOnce(&[u8])) {
        let pieces = match self {
            Spread::One(bytes) => return f(&bytes[start..start + n]),
            Spread::Pieces(pieces) => pieces,
        };
        let mut at = 0;
        let mut buffer = [0u8; MAX_RUN];
        let mut copied = 0;
        for piece in pieces {
            let (from, to) = (at, at + piece.len());
            at = to;
            let want = start + copied;
            if to <= want {
                continue;
            }
            let begin = want - from;
            let take = (n - copied).min(piece.len() - begin);
            if copied == 0 && take == n {
                return f(&piece[begin..begin + n]);
            }
            buffer[copied..copied + take].copy_from_slice(&piece[begin..begin + take]);
            copied += take;
            if copied == n {
                break;
            }
        }
        f(&buffer[..copied]);
    }

    /// Whether these are exactly the bytes of `other`.
    pub(super) fn eq(self, other: &[u8]) -> bool {
        match self {
            Spread::One(bytes) => bytes == other,
            Spread::Pieces(pieces) => {
                if self.len() != other.len() {
                    return false;
                }
                let mut rest = other;
                pieces.iter().all(|piece| {
                    let (this, after) = rest.split_at(piece.len());
                    rest = after;
                    this == &piece[..]
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_equality_read_across_pieces_as_in_one_slice() {
        let whole: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pieces: Vec<Bytes> = [0..1, 1..300, 300..301, 301..1000]
            .into_iter()
            .map(|range| Bytes::copy_from_slice(&whole[range]))
            .collect();
        let spread = Spread::Pieces(&pieces);
        assert_eq!(spread.len(), whole.len());
        for (start, n) in [
            (0, 1),
            (0, 2),
            (250, 60),
            (299, 3),
            (700, MAX_RUN),
            (999, 1),
        ] {
            let mut seen = Vec::new();
            spread.with(start, n, |bytes| seen.extend_from_slice(bytes));
            assert_eq!(seen, &whole[start..start + n], "{start} {n}");
        }
        assert!(spread.eq(&whole));
        assert!(!spread.eq(&whole[..999]));
        let mut other = whole.clone();
        other[300] ^= 1;
        assert!(!spread.eq(&other));
    }
}
