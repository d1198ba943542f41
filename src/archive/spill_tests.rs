//! Tests of spilling parts to local disk and reading them back.

use super::*;

fn spiller(mib: u32) -> (Spiller, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "spill-test-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    (Spiller::new(dir.to_str().unwrap(), mib), dir)
}

fn bytes(byte: u8, len: usize) -> Bytes {
    Bytes::from(vec![byte; len])
}

/// The bytes of the part's file, zeros where nothing was written.
fn on_disk(spill: &Spill) -> Vec<u8> {
    let mut all = Vec::new();
    if let Some(file) = spill.shared.file.get() {
        let len = file.metadata().unwrap().len();
        all = vec![0; usize::try_from(len).unwrap()];
        file.read_exact_at(&mut all, 0).unwrap();
    }
    all
}

async fn read_all(spilled: &Spilled) -> Result<Vec<u8>, JobError> {
    let mut read = spilled.read();
    let mut all = Vec::new();
    while let Some(chunk) = read.next_before(spilled.length()).await? {
        all.extend_from_slice(&chunk);
    }
    spilled.check(&read)?;
    Ok(all)
}

#[tokio::test]
async fn a_part_reads_back_as_written_and_leaves_no_file() {
    let (spiller, dir) = spiller(2);
    let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut spill = spiller.reserve(data.len() as u64).unwrap();
    for chunk in data.chunks(100_000) {
        spill = spill.write(Bytes::copy_from_slice(chunk)).unwrap();
    }
    let spilled = spill.seal();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the file is unlinked"
    );
    assert_eq!(read_all(&spilled).await.unwrap(), data);
    std::fs::remove_dir(&dir).unwrap();
}

#[tokio::test]
async fn a_part_is_read_while_it_is_written_and_checked_at_its_end() {
    let (spiller, dir) = spiller(2);
    let data: Vec<u8> = (0..700_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut spill = spiller.reserve(data.len() as u64).unwrap();
    spill = spill
        .write(Bytes::copy_from_slice(&data[..300_000]))
        .unwrap();
    let mut read = spill.reader();
    let mut all = Vec::new();
    while let Some(chunk) = read.next_before(200_000).await.unwrap() {
        all.extend_from_slice(&chunk);
    }
    assert_eq!(read.offset(), 200_000);
    spill = spill
        .write(Bytes::copy_from_slice(&data[300_000..]))
        .unwrap();
    let spilled = spill.seal();
    while let Some(chunk) = read.next_before(spilled.length()).await.unwrap() {
        all.extend_from_slice(&chunk);
    }
    spilled.check(&read).unwrap();
    assert!(all == data);
    // Stopping short of the end is not reading it all.
    let mut short = spilled.read();
    short.next_before(10).await.unwrap();
    assert!(spilled.check(&short).unwrap_err().is_transient());
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn a_file_given_up_half_way_keeps_its_room_while_it_is_read() {
    let (spiller, dir) = spiller(1);
    let spill = spiller.reserve(10).unwrap().write(bytes(1, 100)).unwrap();
    let read = spill.reader();
    assert!(
        spill.write(bytes(0, MIB as usize)).is_none(),
        "past its room"
    );
    assert!(spiller.reserve(1).is_none(), "the file is still read");
    drop(read);
    assert!(spiller.reserve(MIB).is_some(), "given back");
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn the_disk_budget_is_shared_and_given_back() {
    let (spiller, dir) = spiller(2);
    let first = spiller.reserve(MIB + 1).unwrap();
    assert!(spiller.reserve(1).is_none(), "2 MiB are taken");
    drop(first);
    assert!(spiller.reserve(2 * MIB).is_some());
    assert!(
        Spiller::new("/", 0).reserve(1).is_none(),
        "0 MiB spills nothing"
    );
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn a_part_longer_than_its_room_or_a_missing_directory_is_not_spilled() {
    let (spiller, dir) = spiller(1);
    let spill = spiller.reserve(10).unwrap().write(bytes(0, 100));
    assert!(spill.is_some(), "within the MiB reserved");
    assert!(spill.unwrap().write(bytes(0, MIB as usize)).is_none());
    let gone = Spiller::new(dir.join("missing").to_str().unwrap(), 1);
    assert!(gone.reserve(10).unwrap().write(bytes(1, 1)).is_none());
    std::fs::remove_dir(&dir).unwrap();
}

#[tokio::test]
async fn bytes_changed_on_disk_fail_as_transient_and_turn_spilling_off() {
    let (spiller, dir) = spiller(1);
    let spilled = spiller
        .reserve(1000)
        .unwrap()
        .write(bytes(1, 1000))
        .unwrap()
        .seal();
    let file = spilled.shared.file.get().unwrap();
    file.write_all_at(&[2], 500).unwrap();
    let e = read_all(&spilled).await.unwrap_err();
    assert!(e.is_transient() && e.to_string().contains("CRC-32"), "{e}");
    assert!(spiller.reserve(1).is_none(), "spilling is off");
    std::fs::remove_dir(&dir).unwrap();
}

#[tokio::test]
async fn the_part_the_writer_follows_goes_through_memory_and_only_what_it_falls_behind_reaches_disk()
 {
    let (spiller, dir) = spiller(8);
    let batch = 256 * 1024;
    let data: Vec<u8> = (0..12 * batch).map(|i| (i * 31 % 253) as u8).collect();
    let piece = |n: usize| Bytes::copy_from_slice(&data[n * batch..(n + 1) * batch]);
    let mut spill = spiller.reserve(data.len() as u64).unwrap();
    spill = spill.write(piece(0)).unwrap();
    assert_eq!(
        on_disk(&spill),
        data[..batch],
        "written before anyone follows"
    );

    let mut read = spill.reader();
    read.follow();
    spill = spill.write(piece(1)).unwrap().write(piece(2)).unwrap();
    assert_eq!(
        on_disk(&spill).len(),
        batch,
        "two batches are held in memory"
    );
    let mut copied = Vec::new();
    while let Some(chunk) = read.next_before(3 * batch as u64).await.unwrap() {
        copied.extend_from_slice(&chunk);
    }
    assert!(copied == data[..3 * batch]);
    // Read from memory, so never written; then the reader falls behind by eight batches.
    for n in 3..11 {
        spill = spill.write(piece(n)).unwrap();
    }
    let disk = on_disk(&spill);
    assert!(
        disk.len() == 9 * batch && disk[batch..3 * batch].iter().all(|&b| b == 0),
        "the batches read from memory are holes in the file"
    );
    assert!(
        disk[3 * batch..] == data[3 * batch..9 * batch],
        "what fell behind is on disk"
    );

    let mut other = spill.reader();
    assert!(
        other.next_before(10).await.unwrap_err().is_transient(),
        "nothing reads behind the follower"
    );
    spill = spill.write(piece(11)).unwrap();
    let spilled = spill.seal();
    while let Some(chunk) = read.next_before(spilled.length()).await.unwrap() {
        copied.extend_from_slice(&chunk);
    }
    spilled.check(&read).unwrap();
    assert!(copied == data);
    std::fs::remove_dir(&dir).unwrap();
}

#[tokio::test]
async fn a_part_read_whole_by_its_follower_is_never_written() {
    let (spiller, dir) = spiller(1);
    let mut spill = spiller.reserve(300_000).unwrap();
    let mut read = spill.reader();
    read.follow();
    let mut copied = Vec::new();
    for n in 0..3u8 {
        spill = spill.write(bytes(n, 100_000)).unwrap();
        while let Some(chunk) = read.next_before(u64::from(n + 1) * 100_000).await.unwrap() {
            copied.extend_from_slice(&chunk);
        }
    }
    assert!(spill.shared.file.get().is_none(), "no file was made");
    let spilled = spill.seal();
    assert!(read.next_before(spilled.length()).await.unwrap().is_none());
    spilled.check(&read).unwrap();
    assert_eq!(copied.len(), 300_000);
    assert!(copied[..100_000].iter().all(|&b| b == 0) && copied[200_000..].iter().all(|&b| b == 2));
    std::fs::remove_dir(&dir).unwrap();
}

#[tokio::test]
async fn bytes_the_disk_would_not_take_stay_readable_from_memory() {
    let (spiller, dir) = spiller(2);
    let gone = Spiller::new(dir.join("missing").to_str().unwrap(), 2);
    let batch = 256 * 1024;
    let data: Vec<u8> = (0..3 * batch).map(|i| (i * 17 % 241) as u8).collect();
    let mut spill = gone.reserve(data.len() as u64).unwrap();
    let mut read = spill.reader();
    read.follow();
    for n in 0..2 {
        spill = spill
            .write(Bytes::copy_from_slice(&data[n * batch..(n + 1) * batch]))
            .unwrap();
    }
    let given_up = spill.write(Bytes::copy_from_slice(&data[2 * batch..]));
    assert!(
        given_up.is_none(),
        "the window sheds to a file that cannot be made"
    );
    let mut copied = Vec::new();
    while let Some(chunk) = read.next_before(data.len() as u64).await.unwrap() {
        copied.extend_from_slice(&chunk);
    }
    assert!(copied == data, "every byte fed is read from the window");
    drop(spiller);
    std::fs::remove_dir(&dir).unwrap();
}
