// Images that load only when they scroll into view: <img data-src=...> gets its src from an
// IntersectionObserver on the viewport (which the sidebar's own scroll box clips), so a 200-turn
// timeline asks the server for the few thumbnails on screen, not for hundreds.

export class LazyImages {
  constructor() {
    this.observer = new IntersectionObserver((entries) => this.seen(entries), { rootMargin: "150px 0px" });
  }

  seen(entries) {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const img = entry.target;
      this.observer.unobserve(img);
      if (img.dataset.src) {
        img.src = img.dataset.src;
        delete img.dataset.src;
      }
    }
  }

  image(url, alt, className = "ae-thumb") {
    const img = document.createElement("img");
    img.className = className;
    img.alt = alt;
    img.decoding = "async";
    if (!url) {
      img.classList.add("ae-missing");
      img.title = "no image (removed by retention, or none stored)";
      return img;
    }
    img.dataset.src = url;
    img.addEventListener("error", () => {
      img.classList.add("ae-broken");
      img.title = `could not load ${url}`;
    });
    this.observer.observe(img);
    return img;
  }

  disconnect() {
    this.observer.disconnect();
  }
}
