// Consent-rate chart: the legend becomes buttons that show or hide a purpose's line.
// The chart and its table work without this file.
(() => {
  for (const chart of document.querySelectorAll('[data-chart]')) {
    for (const item of chart.querySelectorAll('[data-legend]')) {
      const series = chart.querySelector(`[data-series="${CSS.escape(item.dataset.legend)}"]`);
      if (!series) continue;
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'legend-toggle';
      button.setAttribute('aria-pressed', 'true');
      button.append(...item.childNodes);
      button.addEventListener('click', () => {
        const shown = button.getAttribute('aria-pressed') !== 'true';
        button.setAttribute('aria-pressed', String(shown));
        series.classList.toggle('is-hidden', !shown);
      });
      item.append(button);
    }
  }
})();
