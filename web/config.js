// Where the page finds the API. Empty: the functions under /auth/, /upload/ and /download/ of the
// page's own origin (the local stack). Where each function has its own host (Knative), replace this
// file when deploying, e.g.:
// window.video2mp3Config = { auth: 'https://auth.example.com', upload: 'https://upload.example.com', download: 'https://download.example.com' };
window.video2mp3Config = window.video2mp3Config || {};
