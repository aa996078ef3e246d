// A gated tag loaded from a src: it runs only once analytics is allowed.
(function () {
  var item = document.createElement('li');
  item.textContent = 'analytics src tag ran (demo/analytics.js)';
  item.dataset.run = 'analytics-src';
  document.getElementById('gated-log').append(item);
})();
