//! Which datagrams travel together: the cutting of a coalesced receive (`UDP_GRO`) back into
//! the datagrams it was, and the grouping of datagrams to send into trains of one
//! `UDP_SEGMENT` send each. Pure functions: the kernel's rules, no I/O.
//!
//! A train is what the kernel can cut back into the very datagrams it was made of: datagrams
//! of one destination, all of one size but the last, which may be shorter. The receiver sees
//! the same datagrams, each intact, whether they went as one train or one by one.

use crate::sys::{MAX_SEGMENTED_BYTES, MAX_SEGMENTS};

/// The datagrams in a receive of `len` bytes that the kernel coalesced from datagrams of
/// `segment` bytes (the last maybe shorter), as `(offset, length)`; `segment` 0 (or not less
/// than `len`): the receive is one datagram.
pub(crate) fn split(len: usize, segment: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = if segment == 0 || segment >= len {
        len.max(1)
    } else {
        segment
    };
    // A zero-length datagram is still one datagram.
    let count = if len == 0 { 1 } else { len.div_ceil(step) };
    (0..count).map(move |i| {
        let offset = i * step;
        (offset, step.min(len - offset))
    })
}

/// How many of the datagrams `lengths` yields (length and destination each), from the first,
/// go as one `UDP_SEGMENT` send: the first one's length is the segment size; the next ones
/// follow while they have the same destination, the previous one was a whole segment and they
/// are no longer than one, up to [`MAX_SEGMENTS`] datagrams and [`MAX_SEGMENTED_BYTES`] in all.
/// `largest` is the largest segment the socket may send (0: the socket sends no trains).
/// 1 means the first datagram goes on its own; 0 that there is none.
pub(crate) fn train_len<K: PartialEq>(
    mut lengths: impl Iterator<Item = (usize, K)>,
    largest: usize,
) -> usize {
    let Some((segment, destination)) = lengths.next() else {
        return 0;
    };
    if segment == 0 || segment > largest.min(usize::from(u16::MAX)) {
        return 1;
    }
    let mut count = 1;
    let mut bytes = segment;
    for (len, to) in lengths {
        if count == MAX_SEGMENTS || to != destination || len > segment {
            break;
        }
        if bytes + len > MAX_SEGMENTED_BYTES {
            break;
        }
        count += 1;
        bytes += len;
        if len < segment {
            // A shorter datagram ends its train: the kernel cuts at whole segments only.
            break;
        }
    }
    count
}

/// The largest segment a socket may still send after a segmented send failed with `error`
/// for segments of `segment` bytes: `EINVAL` or `EMSGSIZE` say that segment is too large for
/// the route (its MTU) and only larger ones are given up; any other error (`EIO`: no checksum
/// offload; `ENOPROTOOPT`: no GSO in this kernel) gives up trains on that socket.
pub(crate) fn largest_after_failure(error: &std::io::Error, segment: usize) -> usize {
    match error.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::EMSGSIZE) => segment.saturating_sub(1),
        _ => 0,
    }
}

/// Whether `error` of a segmented send may be the train's fault rather than the socket's or
/// the destination's (then the same datagrams go again one by one).
pub(crate) fn is_train_error(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL)
            | Some(libc::EMSGSIZE)
            | Some(libc::EIO)
            | Some(libc::ENOPROTOOPT)
            | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train(lengths: &[usize], largest: usize) -> usize {
        train_len(lengths.iter().map(|&len| (len, ())), largest)
    }

    #[test]
    fn a_coalesced_receive_splits_into_whole_segments_and_a_shorter_last() {
        let parts: Vec<_> = split(20 * 1000 + 300, 1000).collect();
        assert_eq!(parts.len(), 21);
        assert_eq!(parts[0], (0, 1000));
        assert_eq!(parts[19], (19_000, 1000));
        assert_eq!(parts[20], (20_000, 300));
        let exact: Vec<_> = split(3 * 64, 64).collect();
        assert_eq!(exact, vec![(0, 64), (64, 64), (128, 64)]);
    }

    #[test]
    fn a_receive_that_was_not_coalesced_is_one_datagram_even_empty() {
        assert_eq!(split(1400, 0).collect::<Vec<_>>(), vec![(0, 1400)]);
        assert_eq!(split(1400, 1400).collect::<Vec<_>>(), vec![(0, 1400)]);
        assert_eq!(split(0, 0).collect::<Vec<_>>(), vec![(0, 0)]);
        assert_eq!(split(65_507, 0).collect::<Vec<_>>(), vec![(0, 65_507)]);
    }

    #[test]
    fn datagrams_of_one_size_go_together_and_a_shorter_one_ends_the_train() {
        let mut lengths = vec![1000; 20];
        lengths.push(300);
        lengths.push(1000);
        assert_eq!(train(&lengths, 65_507), 21);
        assert_eq!(train(&lengths[21..], 65_507), 1);
        assert_eq!(
            train(&[64, 64, 100, 64], 65_507),
            2,
            "a longer one starts anew"
        );
        assert_eq!(train(&[64, 10, 10], 65_507), 2, "after a short one, none");
    }

    #[test]
    fn a_train_keeps_the_kernel_s_limits() {
        assert_eq!(train(&[10; 100], 65_507), MAX_SEGMENTS);
        // 46 x 1,400 = 64,400 bytes; a 47th would pass 65,507.
        assert_eq!(train(&[1400; 60], 65_507), 46);
        assert_eq!(train(&[65_507, 1], 65_507), 1, "no room for a second");
        assert_eq!(train(&[0, 0, 0], 65_507), 1, "empty datagrams go alone");
    }

    #[test]
    fn a_socket_s_ceiling_and_the_destination_bound_a_train() {
        assert_eq!(train(&[1400; 5], 0), 1, "no trains on this socket");
        assert_eq!(train(&[1400; 5], 1399), 1, "above the ceiling");
        assert_eq!(train(&[1400; 5], 1400), 5);
        let mixed = [(64, 'a'), (64, 'a'), (64, 'b'), (64, 'b')];
        assert_eq!(train_len(mixed.iter().copied(), 65_507), 2);
        assert_eq!(train_len(std::iter::empty::<(usize, ())>(), 65_507), 0);
    }

    #[test]
    fn a_failed_train_lowers_or_ends_the_socket_s_trains() {
        let invalid = std::io::Error::from_raw_os_error(libc::EINVAL);
        let io = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(largest_after_failure(&invalid, 9000), 8999);
        assert_eq!(largest_after_failure(&io, 9000), 0);
        assert!(is_train_error(&io));
        let full = std::io::Error::from_raw_os_error(libc::EAGAIN);
        assert!(!is_train_error(&full));
    }
}
