// sie3d avatar viewer. Query parameters (all optional but src):
//   src     splat file relative to this page (.spz, or .ply)
//   up      "y" (file in sie3d's y-up world, as .spz stores it) or "-y" (COLMAP/INRIA y-down .ply)
//   radius  camera distance (world units), fov  vertical field of view in degrees
//   turntable  image shown instead when WebGL 2 is missing
// When the first frames with the splats are drawn, <body data-frames> counts them and the title ends in "ready".
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";

const params = new URLSearchParams(window.location.search);
const src = params.get("src");
const radius = Number(params.get("radius") || 4.5);
const fov = Number(params.get("fov") || 40.1);
const body = document.body;

function fallback(reason) {
  body.classList.add("nowebgl");
  const image = document.getElementById("turntable");
  if (params.get("turntable")) image.src = params.get("turntable");
  body.dataset.error = reason;
  document.title = "sie3d viewer: " + reason;
}

function hasWebGL2() {
  try { return !!document.createElement("canvas").getContext("webgl2"); } catch (e) { return false; }
}

async function main() {
  if (!src) return fallback("no src parameter");
  if (!hasWebGL2()) return fallback("no WebGL 2");
  const container = document.getElementById("view");
  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  renderer.setClearColor(0xffffff, 1);
  container.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(fov, 1, radius / 100, radius * 10);
  scene.add(new SparkRenderer({ renderer }));
  const splats = new SplatMesh({ url: src });
  // sie3d's world is three.js's (y up, the face looks along +z); a y-down file is turned 180 deg about x
  if (params.get("up") === "-y") splats.quaternion.set(1, 0, 0, 0);
  scene.add(splats);

  const controls = new OrbitControls(camera, renderer.domElement);
  controls.enableDamping = true;
  controls.minDistance = radius * 0.2;
  controls.maxDistance = radius * 4;
  const front = () => { camera.position.set(0, 0, radius); controls.target.set(0, 0, 0); controls.update(); };
  front();
  renderer.domElement.addEventListener("dblclick", front);

  function resize() {
    const w = container.clientWidth || 1, h = container.clientHeight || 1;
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
  }
  window.addEventListener("resize", resize);
  resize();

  await splats.initialized;
  let frames = 0;
  renderer.setAnimationLoop(() => {
    controls.update();
    renderer.render(scene, camera);
    frames += 1;
    body.dataset.frames = String(frames);
    if (frames === 10) document.title = "sie3d viewer: ready";
  });
}

main().catch((err) => { console.error(err); fallback("error: " + err); });
