"""One router per API: the Cerise jobs API, GA4GH WES 1.1 and the WebDAV file exchange."""
